"""Deprecated alias of ``fastrnn.captioning.engine`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.captioning.engine"
warnings.warn(f"fastrnn.engine is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
