"""Who computes the matrix products of the fast paths: a choice of GEMM provider.

The products are most of the work of a training iteration (about 90% of the
FLOPs at the full-scale shape), and the libraries that can do them differ a lot
on a given CPU (``python benchmarks/compare_gemm.py`` times them side by side on
the products of a full-scale iteration):

==========  ==================================================================
provider    what it calls
==========  ==================================================================
``numpy``   ``np.matmul``: OpenBLAS in the numpy wheels, which honours
            ``OPENBLAS_CORETYPE`` (``Haswell``, say, pins its AVX2 kernels)
``torch``   ``torch.mm`` on zero-copy views: Intel MKL in the CPU wheel, which
            takes slow paths on AMD CPUs
``onednn``  oneDNN's JIT matmul inside PyTorch
            (``torch.ops.mkldnn._linear_pointwise``)
==========  ==================================================================

``onednn`` computes float32 products only and hands other dtypes to NumPy.
``auto`` (the default of the fast paths) uses ``onednn`` for products of at
least ``AUTO_MIN_FLOP`` multiply-adds when all of these hold, and ``numpy``
for everything else:

- PyTorch is importable and its oneDNN op passes a self-check;
- NumPy's BLAS is OpenBLAS running kernels narrower than the CPU's: AVX2 (or
  older) kernels on a CPU with AVX-512, as when ``OPENBLAS_CORETYPE=Haswell``
  pins them. OpenBLAS with its own AVX-512 kernels is at least as fast as
  oneDNN on these products, so then ``auto`` keeps NumPy.

The rule is read off the machine, not timed, so a given machine and
environment always make the same choice (and the same float rounding).
All providers give the same products up to float rounding; the fast paths'
tests run against each one.

The provider used when none is named (by the fused engine and by the compiled
backends' layer functions) is ``auto``, or ``$FASTRNN_GEMM``, or what
``set_default_provider(name)`` chose last; ``mm(a, b)`` here computes through it.

A provider has three methods:

- ``mm(a, b, out=None)``: ``a @ b`` (into ``out`` when given), returns the result;
- ``mm_add(a, b, out, scratch)``: ``out += a @ b``; ``scratch`` is a buffer of
  ``out``'s shape that a provider may use for the product;
- ``product(a, b, scratch)``: ``a @ b`` in ``scratch`` or in a fresh array,
  whichever the provider makes without a copy; returns it.
"""
import contextlib
import os
import threading

import numpy as np

from fastrnn import config

__all__ = ["GEMM_PROVIDERS", "gemm_provider", "AUTO_MIN_FLOP", "mm", "default_provider",
           "set_default_provider", "use_provider", "describe"]

ENV = config.GEMM

GEMM_PROVIDERS = ("auto", "numpy", "torch", "onednn")
# m*k*n below this (256 x 256 x 512): NumPy. A call into PyTorch costs tens of µs,
# and oneDNN builds a primitive for every new shape, a fixed cost that only
# products well above this size amortise.
AUTO_MIN_FLOP = 1 << 25


class NumpyGemm:
    """Matrix products through NumPy's BLAS (OpenBLAS in the numpy wheels)."""
    name = "numpy"

    @property
    def uses(self):
        """The provider that large products go to: this one."""
        return self.name

    def mm(self, a, b, out=None):
        return np.matmul(a, b, out=out)

    def mm_add(self, a, b, out, scratch):
        # NumPy cannot accumulate inside the product.
        np.matmul(a, b, out=scratch)
        np.add(out, scratch, out=out)

    def product(self, a, b, scratch):
        return np.matmul(a, b, out=scratch)


class _TorchBacked(NumpyGemm):
    """A provider that computes through PyTorch; imports it on construction."""

    def __init__(self):
        import torch  # optional: only these providers need it
        self.torch = torch
        from fastrnn.threads import apply_to_loaded_backends
        apply_to_loaded_backends()   # PyTorch's pool follows fastrnn.set_num_threads


class TorchGemm(_TorchBacked):
    """Matrix products through PyTorch's BLAS (``torch.mm``) on zero-copy views."""
    name = "torch"

    def mm(self, a, b, out=None):
        if out is None:
            out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
        # torch.from_numpy keeps NumPy's strides, so transposed views stay zero-copy.
        self.torch.mm(self.torch.from_numpy(a), self.torch.from_numpy(b),
                      out=self.torch.from_numpy(out))
        return out

    def mm_add(self, a, b, out, scratch):
        self.torch.from_numpy(out).addmm_(self.torch.from_numpy(a), self.torch.from_numpy(b))

    def product(self, a, b, scratch):
        return self.mm(a, b, out=scratch)


class OneDnnGemm(_TorchBacked):
    """float32 products through oneDNN's matmul inside PyTorch (others through NumPy).

    The op computes ``x @ w.T (+ other)`` into a fresh tensor, so ``a @ b`` passes
    ``b.T`` as the weight (a zero-copy view) and a result wanted in ``out`` is
    copied there; ``mm_add`` fuses the accumulation into the product
    (oneDNN's binary-add post-op) and copies the sum back.
    """
    name = "onednn"

    def __init__(self):
        super().__init__()
        self.op = self.torch.ops.mkldnn._linear_pointwise
        self._self_check()

    def mm(self, a, b, out=None):
        if not self._serves(a, b):
            return super().mm(a, b, out)
        t = self.torch.from_numpy
        y = self.op(t(a), t(b).T, None, "none", [], "").numpy()
        if out is None:
            return y
        out[...] = y
        return out

    def mm_add(self, a, b, out, scratch):
        if not self._serves(a, b):
            return super().mm_add(a, b, out, scratch)
        t = self.torch.from_numpy
        out[...] = self.op.binary(t(a), t(out), t(b).T, None, "add").numpy()

    def product(self, a, b, scratch):
        # oneDNN writes a fresh array: returning it saves the copy into scratch.
        return self.mm(a, b) if self._serves(a, b) else super().product(a, b, scratch)

    @staticmethod
    def _serves(a, b):
        """oneDNN's matmul takes non-empty float32 operands; others go to NumPy."""
        return a.dtype == np.float32 and b.dtype == np.float32 and a.size and b.size

    def _self_check(self):
        """Refuse to serve if this PyTorch build's op is missing or computes wrong."""
        rng = np.random.default_rng(0)
        a = rng.standard_normal((33, 70), dtype=np.float32)
        b = rng.standard_normal((70, 45), dtype=np.float32)
        c = rng.standard_normal((33, 45), dtype=np.float32)
        want = a.astype(np.float64) @ b
        got_mm = self.mm(a, b)
        got_add = c.copy()
        self.mm_add(a.T.copy().T, b, got_add, None)   # Fortran-ordered a, too
        scale = np.abs(want).max()
        if (np.abs(got_mm - want).max() > 1e-4 * scale
                or np.abs(got_add - (want + c)).max() > 1e-4 * scale):
            raise RuntimeError("oneDNN matmul self-check failed: results differ from NumPy")


class AutoGemm:
    """oneDNN for large products when it is available and chosen (see the module
    docstring), NumPy for everything else."""
    name = "auto"

    def __init__(self, fast):
        self.fast = fast          # OneDnnGemm, or None (no PyTorch, or NumPy's BLAS is as good)
        self.numpy = NumpyGemm()

    def _pick(self, a, b):
        if self.fast is not None and a.shape[0] * a.shape[1] * b.shape[1] >= AUTO_MIN_FLOP:
            return self.fast
        return self.numpy

    def mm(self, a, b, out=None):
        return self._pick(a, b).mm(a, b, out)

    def mm_add(self, a, b, out, scratch):
        self._pick(a, b).mm_add(a, b, out, scratch)

    def product(self, a, b, scratch):
        return self._pick(a, b).product(a, b, scratch)

    @property
    def uses(self):
        """The provider large float32 products go to: 'onednn' or 'numpy'."""
        return "numpy" if self.fast is None else self.fast.name


_cache = {}
_cache_lock = threading.Lock()
_default = {"name": None}
_block = threading.local()   # a use_provider() block's choice, per Python thread


def default_provider():
    """Name of the provider used when none is named: a ``use_provider`` block of this
    thread, else the last ``set_default_provider``, else ``$FASTRNN_GEMM``, else 'auto'."""
    name = getattr(_block, "name", None)
    return name if name is not None else _chosen(_default, ENV)


def _chosen(state, env):
    """The name set in ``state`` (by a setter), else ``$env``, else 'auto'."""
    return config.get(env) if state["name"] is None else state["name"]


def set_default_provider(name):
    """Make ``name`` (one of ``GEMM_PROVIDERS``) the provider used when none is named;
    ``None`` goes back to ``$FASTRNN_GEMM`` / 'auto'. Fails now if it cannot serve."""
    if name is not None:
        gemm_provider(name)
    _default["name"] = name


def mm(a, b, out=None):
    """``a @ b`` (into ``out`` when given) through the default provider."""
    return gemm_provider().mm(a, b, out)


@contextlib.contextmanager
def use_provider(name):
    """Within the block, ``name`` is the default provider of this thread (``None``: leave
    it as it is). Other threads keep theirs, as with ``fastrnn.use_backend``."""
    if name is None:
        yield
        return
    gemm_provider(name)    # fails now if it cannot serve
    before = getattr(_block, "name", None)
    _block.name = name
    try:
        yield
    finally:
        _block.name = before


def describe(name=None):
    """'auto (large products via onednn)': a provider's name and where large products go."""
    name = default_provider() if name is None else name
    return f"{name} (large products via {gemm_provider(name).uses})"


def gemm_provider(name=None):
    """The GEMM provider called ``name`` (one of ``GEMM_PROVIDERS``; None: the default
    provider), made once per process.

    'torch' and 'onednn' need PyTorch and raise ImportError naming what is
    missing; 'auto' never raises for a missing PyTorch: it falls back to NumPy.
    """
    if name is None:
        name = default_provider()
    provider = _cache.get(name)
    if provider is not None:     # the common case, without taking the lock
        return provider
    if name not in GEMM_PROVIDERS:
        raise ValueError(f"gemm must be one of {GEMM_PROVIDERS}, got {name!r}")
    with _cache_lock:
        if name not in _cache:
            _cache[name] = _make(name)
        return _cache[name]


_AVX512_OPENBLAS_CORES = {"skylakex", "cooperlake", "sapphirerapids"}


def _cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:      # not Linux: no claim
        return False


def _openblas_cores():
    """The kernel sets ('architecture') of the OpenBLAS libraries loaded in this process."""
    from threadpoolctl import threadpool_info
    return [str(i.get("architecture") or "").lower() for i in threadpool_info()
            if i.get("internal_api") == "openblas"]


def numpy_blas_is_narrow():
    """True when NumPy's BLAS is OpenBLAS running kernels narrower than this CPU's:
    no AVX-512 kernels on a CPU that has AVX-512 (``auto``'s reason to use oneDNN)."""
    cores = _openblas_cores()
    return bool(cores) and _cpu_has_avx512() and not any(c in _AVX512_OPENBLAS_CORES
                                                         for c in cores)


def _make(name):
    if name == "numpy":
        return NumpyGemm()
    if name == "auto":
        if not numpy_blas_is_narrow():
            return AutoGemm(None)
        try:
            return AutoGemm(_make("onednn"))
        except ImportError:
            return AutoGemm(None)
    cls = {"torch": TorchGemm, "onednn": OneDnnGemm}[name]
    try:
        return cls()
    except (ImportError, AttributeError, RuntimeError) as err:
        raise ImportError(f"gemm={name!r} needs PyTorch with a working CPU build, which is not "
                          f"available ({err}); use gemm='numpy' or 'auto'") from err


def clear_cache():
    """Forget the providers made so far (tests use it to simulate a missing PyTorch)."""
    with _cache_lock:
        _cache.clear()


# ------------------------------------------------------------ bf16 products
#
# Under precision 'bf16' (``fastrnn.precision``) the fused engine casts every
# operand of a large product to bfloat16 once (weights once per iteration) and
# hands the casts to a bf16 provider. A bf16 provider has:
#
# - ``operand_dtype``: what a cast is: float32 holding bfloat16 values (low 16
#   bits zero), or uint16 bfloat16 bit patterns;
# - ``cast(x, out=None)``: float32 ``x`` -> its operand (``out`` may be ``x``
#   itself when the operand dtype is float32);
# - ``mm``, ``mm_add``, ``product`` as above, on operands, with float32 results
#   accumulated in float32.

BF16_ENV = config.BF16_GEMM
BF16_PROVIDERS = ("auto", "emulated", "onednn", "mkl", "torch")
MKL_HINT = "pip install mkl"


class EmulatedBf16Gemm:
    """bf16 products on a float32 GEMM: operands rounded to bfloat16 and kept in float32.

    A product of two bfloat16 values is exact in float32, so a float32 GEMM of the
    rounded operands computes what a bf16 GEMM with float32 accumulation does (up to
    the order of the sums). The fastest way on CPUs without bf16 hardware, where the
    bf16 libraries convert to float32 internally anyway.
    """
    name = "emulated"
    operand_dtype = np.dtype(np.float32)

    def __init__(self, fp32):
        self.fp32 = fp32             # the float32 provider that computes the products
        self.mm, self.mm_add, self.product = fp32.mm, fp32.mm_add, fp32.product

    @property
    def uses(self):
        return f"float32 products via {self.fp32.uses}"

    @staticmethod
    def cast(x, out=None):
        from fastrnn.precision import round_bf16
        return round_bf16(x, out)


class _Bf16Bits:
    """Base of the providers whose operands are uint16 bfloat16 bit patterns."""
    operand_dtype = np.dtype(np.uint16)

    @staticmethod
    def cast(x, out=None):
        from fastrnn.precision import to_bf16_bits
        return to_bf16_bits(x, out)

    def product(self, a, b, scratch):
        return self.mm(a, b, out=scratch)

    def mm(self, a, b, out=None):
        a, b = _bits_operand(a, "a"), _bits_operand(b, "b")
        if out is None:
            out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
        self._checked_gemm(a, b, out, accumulate=False)
        return out

    def mm_add(self, a, b, out, scratch):
        self._checked_gemm(_bits_operand(a, "a"), _bits_operand(b, "b"), out, accumulate=True)

    def _checked_gemm(self, a, b, out, accumulate):
        """Check the operands against each other and out, then self._gemm (a compiled
        library call that would otherwise read or write out of bounds)."""
        (m, k), (k2, n) = a.shape, b.shape
        if k != k2:
            raise ValueError(f"bf16 gemm: a is {a.shape} and b is {b.shape}; inner sizes differ")
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (m, n)
                and out.flags.writeable):
            raise ValueError(f"bf16 gemm: out must be a writeable float32 array of shape "
                             f"{(m, n)}, got {_describe(out)}")
        if m == 0 or n == 0:
            return
        if k == 0:
            if not accumulate:
                out[...] = 0
            return
        if not (out.strides[1] == 4 or n == 1) or out.strides[0] < 4 * n or out.strides[0] % 4:
            raise ValueError("bf16 gemm: out must have contiguous rows")
        self._gemm(_unit_stride(a), _unit_stride(b), out, accumulate)


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"{x.dtype} array of shape {x.shape}" + ("" if x.flags.writeable else " (read-only)")
    return type(x).__name__


def _bits_operand(x, name):
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint16 and x.ndim == 2):
        raise ValueError(f"bf16 gemm: {name} must be a 2-D uint16 array of bfloat16 bits "
                         f"(fastrnn.precision.to_bf16_bits), got {_describe(x)}")
    return x


def _unit_stride(a):
    """a itself when one of its axes has unit stride and the other a stride at least
    the extent of the first (the layouts BLAS-style libraries take), else a copy."""
    rows, cols = a.shape
    s0, s1 = a.strides[0] // 2, a.strides[1] // 2
    if a.strides[0] % 2 == 0 and a.strides[1] % 2 == 0 and rows > 1 and cols > 1 and (
            (s1 == 1 and s0 >= cols) or (s0 == 1 and s1 >= rows)):
        return a
    return a.copy(order="C")     # canonical strides, whatever the size-1 axes had


class OneDnnBf16Gemm(_Bf16Bits):
    """bf16 products through oneDNN's matmul primitive (``fastrnn._onednn``): bf16 A and
    B, float32 C, ``mm_add`` accumulating with a sum post-op. oneDNN dispatches on the
    CPU's features (AMX-BF16, AVX512-BF16) whatever its vendor; it is what PyTorch's
    bf16 CPU products run on, here with a float32 result."""
    name = "onednn"

    def __init__(self):
        from fastrnn._onednn import OneDnnMatmul
        self.dnnl = OneDnnMatmul()
        self._self_check()

    @property
    def uses(self):
        return f"oneDNN {self.dnnl.version} matmul (bf16 x bf16 -> float32)"

    def _gemm(self, a, b, out, accumulate):
        _sync_omp_threads()
        self.dnnl.matmul(a, b, out, accumulate)

    def _self_check(self):
        _bf16_self_check(self, "oneDNN matmul")


def _sync_omp_threads():
    """Give the calling thread's GNU OpenMP teams (which run oneDNN's products) the
    fastrnn thread count (``fastrnn.set_num_threads``); OpenMP keeps it per thread."""
    from fastrnn.threads import get_num_threads
    n = get_num_threads()
    if getattr(_omp_local, "threads", None) != n:
        _omp_set_num_threads(n)
        _omp_local.threads = n


_omp_local = threading.local()


def _omp_set_num_threads(n):
    import ctypes
    import ctypes.util
    global _gomp
    if _gomp is None:
        _gomp = ctypes.CDLL(ctypes.util.find_library("gomp") or "libgomp.so.1")
        _gomp.omp_set_num_threads.argtypes = [ctypes.c_int]
    _gomp.omp_set_num_threads(n)


_gomp = None


_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_MKL_THREADING_GNU = 3


def _find_mkl():
    """Path of Intel MKL's single dynamic library, or None."""
    import ctypes.util
    import glob
    import sys
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, sys.exec_prefix)):
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libmkl_rt.so*")), reverse=True):
            return path
    return ctypes.util.find_library("mkl_rt")


class MklBf16Gemm(_Bf16Bits):
    """bf16 products through Intel MKL's ``cblas_gemm_bf16bf16f32`` (ctypes): bf16 A and
    B, float32 C (``C = A B + beta C``, so ``mm_add`` accumulates in the call). Uses
    AMX / AVX512-BF16 where the CPU has them.

    MKL is told to thread with GNU OpenMP, the runtime of the Cython kernels and of
    PyTorch, so that two OpenMP runtimes never share the process; its thread count
    follows ``fastrnn.set_num_threads``.
    """
    name = "mkl"

    def __init__(self):
        import ctypes
        path = _find_mkl()
        if path is None:
            raise ImportError(f"the bf16 GEMM provider 'mkl' needs Intel MKL: {MKL_HINT}")
        os.environ.setdefault("MKL_THREADING_LAYER", "GNU")
        try:
            lib = ctypes.CDLL(path)
            fn = lib.cblas_gemm_bf16bf16f32
        except (OSError, AttributeError) as err:
            raise ImportError(f"Intel MKL at {path} cannot serve bf16 products ({err}); "
                              f"{MKL_HINT}") from err
        lib.MKL_Set_Threading_Layer(_MKL_THREADING_GNU)
        i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
        fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
        fn.restype = None
        self.lib, self.fn, self.path = lib, fn, path
        self._threads = None
        self._self_check()

    @property
    def uses(self):
        return f"Intel MKL cblas_gemm_bf16bf16f32 ({os.path.basename(self.path)})"

    def _sync_threads(self):
        from fastrnn.threads import get_num_threads
        n = get_num_threads()
        if n != self._threads:
            self.lib.MKL_Set_Num_Threads(n)
            self._threads = n

    @staticmethod
    def _layout(a):
        """(transpose flag, leading dimension) of a unit-stride operand (see _unit_stride)."""
        s0, s1 = a.strides[0] // 2, a.strides[1] // 2
        return (_NO_TRANS, s0) if s1 == 1 else (_TRANS, s1)

    def _gemm(self, a, b, out, accumulate):
        (m, k), n = a.shape, b.shape[1]
        (ta, lda), (tb, ldb) = self._layout(a), self._layout(b)
        self._sync_threads()
        self.fn(_ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
                1.0 if accumulate else 0.0, out.ctypes.data, out.strides[0] // 4)

    def _self_check(self):
        _bf16_self_check(self, "Intel MKL cblas_gemm_bf16bf16f32")


class TorchBf16Gemm(_Bf16Bits, _TorchBacked):
    """bf16 products through ``torch.mm`` on bfloat16 tensors (what ``torch.autocast``
    runs). PyTorch has no float32-output bf16 product on CPU: the result is rounded
    to bfloat16 before it is widened into the float32 output, so it is less exact
    than the other providers. For comparison; not chosen by 'auto'."""
    name = "torch"

    def __init__(self):
        _TorchBacked.__init__(self)
        self._self_check()

    @property
    def uses(self):
        return "torch.mm on bfloat16 tensors (bf16 output)"

    def _t(self, a):
        return self.torch.from_numpy(a).view(self.torch.bfloat16)

    def mm(self, a, b, out=None):
        y = self.torch.mm(self._t(a), self._t(b))
        if out is None:
            return y.float().numpy()
        self.torch.from_numpy(out).copy_(y)
        return out

    def mm_add(self, a, b, out, scratch):
        self.torch.from_numpy(out).add_(self.torch.mm(self._t(a), self._t(b)))

    def _self_check(self):
        _bf16_self_check(self, "torch.mm on bfloat16", rtol=1e-2)


def _bf16_self_check(provider, what, rtol=1e-4):
    """Refuse a bf16 provider whose products differ from float64 ones of the same
    bf16 operands (transposed operand and accumulation included)."""
    from fastrnn.precision import from_bf16_bits, to_bf16_bits
    rng = np.random.default_rng(0)
    a = rng.standard_normal((33, 70), dtype=np.float32)
    b = rng.standard_normal((45, 70), dtype=np.float32)
    c = rng.standard_normal((33, 45), dtype=np.float32)
    ab, bb = to_bf16_bits(a), to_bf16_bits(b)
    want = from_bf16_bits(ab).astype(np.float64) @ from_bf16_bits(bb).astype(np.float64).T
    got = provider.mm(ab, bb.T)
    got_add = c.copy()
    provider.mm_add(np.asfortranarray(ab), bb.T, got_add, None)
    scale = np.abs(want).max()
    if (np.abs(got - want).max() > rtol * scale
            or np.abs(got_add - (want + c)).max() > rtol * scale):
        raise RuntimeError(f"{what} self-check failed: results differ from float64 products")


_bf16_default = {"name": None}


def default_bf16_provider():
    """Name of the bf16 provider used when none is named: ``set_default_bf16_provider``,
    else ``$FASTRNN_BF16_GEMM``, else 'auto'."""
    return _chosen(_bf16_default, BF16_ENV)


def set_default_bf16_provider(name):
    """Make ``name`` (one of ``BF16_PROVIDERS``) the bf16 provider used when none is
    named; ``None`` goes back to ``$FASTRNN_BF16_GEMM`` / 'auto'. Fails now if it
    cannot serve."""
    if name is not None:
        bf16_provider(name)
    _bf16_default["name"] = name


def auto_bf16_choice(capability=None):
    """What 'auto' picks. On a CPU with AMX-BF16 or AVX512-BF16 (bf16 products at
    hardware speed): 'onednn' (its kernels dispatch on the CPU's features, Intel's and
    AMD's alike), else 'mkl' if only Intel MKL is installed (it may not use the bf16
    instructions of a non-Intel CPU), else 'onednn' (which then names what to install).
    Without bf16 hardware: 'emulated' (float32 products of rounded operands, faster
    there than a bf16 library, which converts to float32 itself)."""
    if capability is None:
        from fastrnn.precision import bf16_capability
        capability = bf16_capability()
    if not capability:
        return "emulated"
    from fastrnn._onednn import find_library
    if find_library() is None and _find_mkl() is not None:
        return "mkl"
    return "onednn"


def bf16_provider(name=None, fp32=None):
    """The bf16 provider called ``name`` (one of ``BF16_PROVIDERS``; None: the default).

    'emulated' computes through the float32 provider ``fp32`` (a provider object or
    name; default: the default float32 provider). 'onednn' needs oneDNN
    (``pip install 'fastrnn[bf16]'``), 'mkl' Intel MKL and 'torch' PyTorch; each
    raises ImportError naming what to install.
    """
    if name is None:
        name = default_bf16_provider()
    if name not in BF16_PROVIDERS:
        raise ValueError(f"bf16 gemm must be one of {BF16_PROVIDERS}, got {name!r}")
    if name == "auto":
        name = auto_bf16_choice()
    if name == "emulated":
        base = fp32 if fp32 is not None and not isinstance(fp32, str) else gemm_provider(fp32)
        key = ("bf16", name, base.name)
    else:
        key = ("bf16", name)
    provider = _cache.get(key)
    if provider is not None:
        return provider
    with _cache_lock:
        if key not in _cache:
            if name == "emulated":
                _cache[key] = EmulatedBf16Gemm(base)
            elif name == "onednn":
                _cache[key] = OneDnnBf16Gemm()
            elif name == "mkl":
                _cache[key] = MklBf16Gemm()
            else:
                try:
                    _cache[key] = TorchBf16Gemm()
                except (ImportError, AttributeError, RuntimeError) as err:
                    raise ImportError(f"bf16 gemm 'torch' needs PyTorch with a working CPU "
                                      f"build ({err}): pip install 'fastrnn[torch]'") from err
        return _cache[key]
