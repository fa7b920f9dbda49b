"""Deprecated alias of ``fastrnn.captioning.data.synthetic`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.captioning.data.synthetic"
warnings.warn(f"fastrnn.data.synthetic is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
