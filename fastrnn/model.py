"""Deprecated alias of ``fastrnn.captioning.model`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.captioning.model"
warnings.warn(f"fastrnn.model is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
