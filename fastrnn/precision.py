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
import threading
import warnings
from collections.abc import Iterator

import numpy as np

from fastrnn import config

__all__ = ["PRECISIONS", "set_precision", "get_precision", "use_precision",
           "bf16_capability", "describe_capability", "round_bf16", "to_bf16_bits",
           "from_bf16_bits", "warn_if_slow"]

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

def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:      # not Linux: no claim
        pass
    return set()


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


_jit = {}


def _kernels():
    """The Numba conversion kernels (one parallel pass each), compiled on first use."""
    if not _jit:
        import numba

        @numba.njit(inline="always")
        def rounded(u):
            if (u & 0x7FFFFFFF) > 0x7F800000:
                return (u | _QUIET_BIT) & _HIGH
            return (u + (_ROUND_BIAS + ((u >> 16) & 1))) & _HIGH

        def round_f32(src, dst):    # src, dst uint32 (n,) views of float32 data
            for i in numba.prange(src.shape[0]):
                dst[i] = rounded(np.uint64(src[i]))

        def to_bits(src, dst):      # src uint32 (n,), dst uint16 (n,)
            for i in numba.prange(src.shape[0]):
                dst[i] = rounded(np.uint64(src[i])) >> 16

        from fastrnn import threads
        threads.apply_to_loaded_backends()
        for name, fn in (("round_f32", round_f32), ("to_bits", to_bits)):
            _jit[name] = (numba.njit(cache=True)(fn), numba.njit(parallel=True, cache=True)(fn))
    return _jit


# Below this many elements a conversion runs on one thread: waking a pool costs more.
PARALLEL_MIN_SIZE = 1 << 16


def _convert(kernel, src, dst):
    _kernels()[kernel][src.size >= PARALLEL_MIN_SIZE](src, dst)


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
    src, dst = _flat(x), _flat(out)
    if src is not None and dst is not None and x.size:
        _convert("round_f32", src.view(np.uint32), dst.view(np.uint32))
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
    src, dst = _flat(x), _flat(out)
    if src is not None and dst is not None and x.size:
        _convert("to_bits", src.view(np.uint32), dst)
    elif x.size:
        out[...] = (_rounded_bits_numpy(x) >> 16).astype(np.uint16).reshape(x.shape)
    return out


def from_bf16_bits(bits):
    """uint16 bfloat16 bit patterns -> their float32 values (exact)."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)
