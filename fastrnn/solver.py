"""Deprecated alias of ``fastrnn.captioning.solver`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.captioning.solver"
warnings.warn(f"fastrnn.solver is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
