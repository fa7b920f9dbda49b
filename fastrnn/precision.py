"""Arithmetic precision of the fused training path: 'fp32' (exact) or 'bf16' (mixed).

- ``"fp32"`` (the default): every product and every elementwise step in the
  params' dtype; the fused engine equals the NumPy reference up to float rounding.
- ``"bf16"``: mixed precision. The operands of every large matrix product are
  rounded to bfloat16 (8 bits of mantissa), products accumulate in float32.
  Master weights, optimizer state, gate arithmetic, cell state, softmax and loss
  stay float32. Who computes the bf16 products is a choice of provider
  (``fastrnn.gemm.bf16_provider``).

The precision is read by ``CaptioningRNN.loss`` (and so by the solver and the
data-parallel path) through ``fastrnn.captioning.engine``; the CS231n layer functions of
``fastrnn.layers`` ignore it, and float64 models always run in float64 (they are
for gradient checks, which bf16 rounding would defeat).

Choose it with ``set_precision(name)`` (every thread), the per-thread context
manager ``use_precision(name)``, or ``$FASTRNN_PRECISION``; ``get_precision()``
says which one is in force.

bfloat16 conversion here rounds to nearest, ties to even, as hardware does;
NaN stays NaN (quiet, sign kept), infinities stay infinite, finite values past
the largest bfloat16 round to infinity. Two forms serve the providers:
``round_bf16`` keeps the rounded value in a float32 (low 16 bits zero) and
``to_bf16_bits`` gives the 16-bit pattern (uint16), what bf16 GEMM libraries read.
"""
import contextlib
import functools
import threading
import warnings
from collections.abc import Iterator

import numpy as np

from fastrnn import config

__all__ = ["PRECISIONS", "set_precision", "get_precision", "use_precision",
           "bf16_capability", "describe_capability", "round_bf16", "to_bf16_bits",
           "from_bf16_bits", "to_operand", "warn_if_slow"]

ENV = config.PRECISION
PRECISIONS = ("fp32", "bf16")

_state = threading.local()      # per-thread override set by use_precision()
_global = {"name": None}        # set_precision(); None: the environment, else 'fp32'


def _check(name, source):
    if name not in PRECISIONS:
        raise ValueError(f"{source} must be one of {PRECISIONS}, got {name!r}")
    return name


def set_precision(name: str) -> None:
    """Use precision ``name`` ('fp32' or 'bf16') in every thread from now on;
    ``None`` goes back to ``$FASTRNN_PRECISION`` / 'fp32'."""
    _global["name"] = None if name is None else _check(name, "set_precision: name")


def get_precision() -> str:
    """The precision in force: a ``use_precision`` block, else ``set_precision``,
    else ``$FASTRNN_PRECISION``, else 'fp32'."""
    override = getattr(_state, "name", None)
    if override is not None:
        return override
    if _global["name"] is not None:
        return _global["name"]
    return config.get(ENV)


@contextlib.contextmanager
def use_precision(name: str) -> Iterator[str]:
    """Context manager: run the enclosed block (in this thread) in precision ``name``."""
    _check(name, "use_precision: name")
    previous = getattr(_state, "name", None)
    _state.name = name
    try:
        yield name
    finally:
        _state.name = previous


# ------------------------------------------------------------ CPU capability

@functools.cache
def _cpu_flags():
    """The CPU's feature flags, read once (every bf16 loss asks for them)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:      # not Linux: no claim
        pass
    return frozenset()


def bf16_capability(flags=None):
    """The bfloat16 matrix hardware of this CPU, best first: a tuple drawn from
    ('amx-bf16', 'avx512-bf16'); empty when it has neither (``flags``: a set of
    /proc/cpuinfo flags to read instead of this machine's)."""
    flags = _cpu_flags() if flags is None else set(flags)
    found = []
    if "amx_bf16" in flags and "amx_tile" in flags:
        found.append("amx-bf16")
    if "avx512_bf16" in flags:
        found.append("avx512-bf16")
    return tuple(found)


def describe_capability(flags=None):
    """One line for humans: what bf16 hardware was found, and what that means."""
    found = bf16_capability(flags)
    if found:
        return "bf16 hardware: " + ", ".join(f.upper() for f in found)
    return ("bf16 hardware: none (no AMX-BF16, no AVX512-BF16): bf16 computes correctly "
            "but is not faster than fp32")


_warned = {"slow": False}


def warn_if_slow():
    """Warn once per process when bf16 runs on a CPU without bf16 matrix hardware."""
    if _warned["slow"] or bf16_capability():
        return
    _warned["slow"] = True
    warnings.warn("fastrnn precision 'bf16' on a CPU without AMX-BF16 or AVX512-BF16: the "
                  "results are correct but it will not be faster than 'fp32'",
                  RuntimeWarning, stacklevel=3)


# ------------------------------------------------------------ conversion

_ROUND_BIAS = 0x7FFF
_QUIET_BIT = 0x00400000
_HIGH = 0xFFFF0000


def _rounded_bits_numpy(x):
    """float32 array -> uint32 bit patterns rounded to bfloat16 (low 16 bits zero)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (u + _ROUND_BIAS + ((u >> 16) & 1)) & _HIGH
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    if nan.any():
        r[nan] = (u[nan] | _QUIET_BIT) & _HIGH
    return r.astype(np.uint32)


# Below this many elements a Numba conversion runs on one thread: waking a pool costs more.
PARALLEL_MIN_SIZE = 1 << 16

_cython = {}


def _cython_converter():
    """The compiled extension's conversion (``bf16_operand_flat``), or None when this
    install has no extension. Preferred over Numba's, so that a run on the cython backend
    never loads Numba's compiler and its memory just to convert operands."""
    if "fn" not in _cython:
        try:
            from fastrnn.backends.cython_backend import _k
            _cython["fn"] = getattr(_k, "bf16_operand_flat", None)
        except ImportError:
            _cython["fn"] = None
    return _cython["fn"]


def _convert(src, dst, use_cython=None):
    """float32 src (n,) -> dst (n,): uint16 bit patterns or rounded float32 (dst may be
    src). ``use_cython``: force one implementation (tests); default the compiled one."""
    fn = _cython_converter() if use_cython is not False else None
    if use_cython and fn is None:
        raise ImportError("the compiled conversion kernels are not built")
    if fn is not None:
        fn(src, dst)
        return
    from fastrnn.backends import _numba_kernels as k
    (k.bf16_operand_flat if src.size >= PARALLEL_MIN_SIZE else k.bf16_operand_flat_serial)(src, dst)


def _check_out(fn, out, x, dtype):
    """The conversion kernels write as many elements as x has: out must match exactly."""
    if not isinstance(out, np.ndarray) or out.dtype != dtype or out.shape != x.shape:
        got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"{fn}: out must be a {np.dtype(dtype)} array of shape {x.shape}, "
                         f"got {got}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out is read-only")


def _flat(a):
    """A 1-D view of a C-contiguous array, or None."""
    return a.reshape(-1) if a.flags.c_contiguous else None


def round_bf16(x, out=None):
    """float32 ``x`` rounded to the nearest bfloat16 value, held in float32.

    ``out`` (float32, x's shape) receives it when given, and may be ``x`` itself;
    C-contiguous arrays convert in one parallel pass, others through NumPy.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"round_bf16: x must be float32, got {x.dtype}")
    if out is None:
        out = np.empty_like(x, order="C")
    _check_out("round_bf16", out, x, np.float32)
    src, dst = _flat(x), _flat(out)
    if src is not None and dst is not None and x.size:
        _convert(src, dst)
    elif x.size:
        out[...] = _rounded_bits_numpy(x).view(np.float32).reshape(x.shape)
    return out


def to_bf16_bits(x, out=None):
    """float32 ``x`` -> uint16 bfloat16 bit patterns (round to nearest even), into
    ``out`` (uint16, x's shape) when given."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"to_bf16_bits: x must be float32, got {x.dtype}")
    if out is None:
        out = np.empty(x.shape, dtype=np.uint16)
    _check_out("to_bf16_bits", out, x, np.uint16)
    src, dst = _flat(x), _flat(out)
    if src is not None and dst is not None and x.size:
        _convert(src, dst)
    elif x.size:
        out[...] = (_rounded_bits_numpy(x) >> 16).astype(np.uint16).reshape(x.shape)
    return out


def to_operand(x, out):
    """float32 ``x`` -> its bfloat16 product operand, written into ``out``: uint16 bit
    patterns (``to_bf16_bits``) or rounded float32 values (``round_bf16``; ``out`` may
    be ``x``), by ``out``'s dtype."""
    out_dtype = getattr(out, "dtype", None)
    if out_dtype == np.uint16:
        return to_bf16_bits(x, out)
    if out_dtype == np.float32:
        return round_bf16(x, out)
    raise TypeError(f"to_operand: out must be a uint16 or float32 array, got {out_dtype}")


def from_bf16_bits(bits):
    """uint16 bfloat16 bit patterns -> their float32 values (exact)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)
