"""Deprecated alias of ``fastrnn.captioning.metrics`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.captioning.metrics"
warnings.warn(f"fastrnn.metrics is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
