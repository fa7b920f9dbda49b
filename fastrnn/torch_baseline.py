"""Deprecated alias of ``fastrnn.captioning.torch_baseline`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.captioning.torch_baseline"
warnings.warn(f"fastrnn.torch_baseline is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
