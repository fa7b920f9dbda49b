"""Deprecated alias of ``fastrnn.bench.distributed`` (moved there); removed in the next release."""
import importlib
import warnings

_NEW = "fastrnn.bench.distributed"
warnings.warn(f"fastrnn.bench_distributed is deprecated; import {_NEW} instead", DeprecationWarning,
              stacklevel=2)
globals().update({k: v for k, v in vars(importlib.import_module(_NEW)).items()
                  if not k.startswith("__")})
