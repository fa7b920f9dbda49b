# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fused elementwise kernels of the Cython/OpenMP backend (``fastrnn.backends._cython_kernels``).

Matrix products stay in a BLAS (the Python wrapper ``cython_backend.py`` does
them); everything elementwise around them runs here in one pass per row, in
``nogil`` loops parallel over rows (``prange``), each thread owning whole rows
so no output is shared.

One kernel body serves float32 and float64: arrays are typed memoryviews of
the fused type ``floating`` (``# IN`` / ``# OUT`` mark what a kernel reads and
writes, with the shape). ``floating[:, ::1]`` is a C-contiguous array;
``floating[:, :]`` may have strided rows (a timestep slice ``x[:, t, :]`` of an
``(N, T, K)`` buffer), but its last axis must be contiguous, which each kernel
checks. Every kernel checks shapes and id ranges before it touches memory, so
a wrong call raises ValueError naming the argument instead of reading out of
bounds.

float32 uses the vectorisable ``exp``/``tanh`` of ``fastrnn.backends.fastmath``
(the constants below mirror its table; ``FASTMATH_CONSTANTS`` exports them for
the test that compares the two); float64 uses libm, so gradient checks see
exact math. Sigmoid is ``0.5 * (1 + tanh(x / 2))`` like the reference: it never
overflows.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, log, tanh, fabsf, sqrt, sqrtf
from libc.stdint cimport int32_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

cimport openmp

import functools

import numpy as np

cnp.import_array()

# Below this many elements a kernel runs on the calling thread. Kernels alternate
# with BLAS calls, and every parallel region wakes a team that then competes with
# the BLAS threads for the cores; for small work that costs more than it saves.
cdef Py_ssize_t MIN_PARALLEL_WORK = 1 << 18


def set_num_threads(n):
    """Use ``n`` OpenMP threads in the parallel kernels (``omp_set_num_threads``).

    The setting lives in the OpenMP runtime, so it also holds for the AVX2 build of
    this module; like every OpenMP setting it applies to the calling Python thread.
    ``n`` is checked against ``fastrnn.threads.MAX_THREADS`` here too: a team far
    larger than that crashes libgomp when a parallel kernel starts.
    """
    from fastrnn.threads import check_num_threads
    openmp.omp_set_num_threads(<int>check_num_threads(n, "_cython_kernels.set_num_threads: n"))


def get_num_threads():
    """Number of OpenMP threads the parallel kernels use (``omp_get_max_threads``)."""
    return openmp.omp_get_max_threads()


cdef extern from *:
    """
    static int fastrnn_cpu_has_avx2_fma(void) {
    #if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    #else
        return 0;
    #endif
    }
    """
    int fastrnn_cpu_has_avx2_fma()


def cpu_has_avx2_fma():
    """True when this CPU (and OS) can run the ``_cython_kernels_avx2`` build."""
    return bool(fastrnn_cpu_has_avx2_fma())


cdef inline int _threads_for(Py_ssize_t work) noexcept nogil:
    return 1 if work < MIN_PARALLEL_WORK else openmp.omp_get_max_threads()


# ------------------------------------------------------------------ scalar math
# The table of fastrnn.backends.fastmath, as C constants.

cdef float EXP_HI = 89.0
cdef float EXP_LO = -104.0
cdef float LOG2E = 1.44269504088896341
cdef float ROUND_SHIFT = 255.5
cdef int ROUND_BIAS = 255
cdef float LN2_HI = 0.693359375
cdef float LN2_LO = -2.12194440e-4
cdef float EXP_P0 = 1.9875691500e-4
cdef float EXP_P1 = 1.3981999507e-3
cdef float EXP_P2 = 8.3334519073e-3
cdef float EXP_P3 = 4.1665795894e-2
cdef float EXP_P4 = 1.6666665459e-1
cdef float EXP_P5 = 5.0000001201e-1
cdef float TANH_CUT = 0.625
cdef float TANH_Q0 = -5.70498872745e-3
cdef float TANH_Q1 = 2.06390887954e-2
cdef float TANH_Q2 = -5.37397155531e-2
cdef float TANH_Q3 = 1.33314422036e-1
cdef float TANH_Q4 = -3.33332819422e-1

FASTMATH_CONSTANTS = {
    "EXP_HI": EXP_HI, "EXP_LO": EXP_LO, "LOG2E": LOG2E, "ROUND_SHIFT": ROUND_SHIFT,
    "ROUND_BIAS": ROUND_BIAS, "LN2_HI": LN2_HI, "LN2_LO": LN2_LO,
    "EXP_P": (EXP_P0, EXP_P1, EXP_P2, EXP_P3, EXP_P4, EXP_P5),
    "TANH_CUT": TANH_CUT, "TANH_Q": (TANH_Q0, TANH_Q1, TANH_Q2, TANH_Q3, TANH_Q4),
}


cdef union _Float32Bits:
    float f
    int32_t i
    uint32_t u


cdef inline float _pow2f(int k) noexcept nogil:
    """2^k for -126 <= k <= 127, from its exponent bits."""
    cdef _Float32Bits s
    s.i = (k + 127) << 23
    return s.f


cdef inline float _expf(float x) noexcept nogil:
    """exp(x) in float32 (fastrnn.backends.fastmath). Branch-free float32 arithmetic
    (no double literals, no calls), so gcc vectorizes the loops that call it."""
    cdef float r, p, one = 1.0
    cdef int n, n1
    x = EXP_HI if x > EXP_HI else x
    x = EXP_LO if x < EXP_LO else x
    n = <int>(x * LOG2E + ROUND_SHIFT) - ROUND_BIAS
    r = x - n * LN2_HI
    r = r - n * LN2_LO
    p = ((((EXP_P0 * r + EXP_P1) * r + EXP_P2) * r + EXP_P3) * r + EXP_P4) * r + EXP_P5
    p = p * r * r + r + one
    n1 = n >> 1
    return p * _pow2f(n1) * _pow2f(n - n1)


cdef inline float _tanhf(float x) noexcept nogil:
    """tanh(x) in float32 (fastrnn.backends.fastmath): both branches computed, one
    selected, so loops over it vectorize."""
    cdef float one = 1.0, two = 2.0
    cdef float ax = fabsf(x)
    cdef float z = x * x
    cdef float small = (((TANH_Q0 * z + TANH_Q1) * z + TANH_Q2) * z + TANH_Q3) * z + TANH_Q4
    small = small * z * x + x
    cdef float large = one - two / (_expf(two * ax) + one)
    large = -large if x < 0 else large
    return small if ax < TANH_CUT else large


cdef inline floating _tanh(floating x) noexcept nogil:
    if floating is float:
        return _tanhf(x)
    else:
        return tanh(x)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return _expf(x)
    else:
        return exp(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    cdef floating half = 0.5       # typed: a bare 0.5 would promote float32 math to double
    return half * (1 + _tanh(half * x))


# ------------------------------------------------------------ bfloat16 operands
# Under precision 'bf16' a kernel that produces an activation also writes its product
# operand in the same pass, while the row is in cache: the bfloat16 bit patterns
# (uint16, for bf16 GEMM libraries) or the rounded value kept in a float32 (for a
# float32 GEMM). Round to nearest even, NaN kept quiet: the rule of fastrnn.precision.

cdef inline uint32_t _bf16_rounded(float x) noexcept nogil:
    """The bits of x rounded to bfloat16 (low 16 bits zero)."""
    cdef _Float32Bits s
    s.f = x
    if (s.u & 0x7FFFFFFFu) > 0x7F800000u:
        return (s.u | 0x00400000u) & 0xFFFF0000u
    return (s.u + 0x7FFFu + ((s.u >> 16) & 1u)) & 0xFFFF0000u


cdef inline void _operand_row(const float* src, float* rounded, uint16_t* bits,
                              Py_ssize_t n) noexcept nogil:
    """n values of src -> their bfloat16 operand, into rounded (may be src) or bits."""
    cdef Py_ssize_t j
    cdef _Float32Bits s
    if rounded != NULL:
        for j in range(n):
            s.u = _bf16_rounded(src[j])
            rounded[j] = s.f
    elif bits != NULL:
        for j in range(n):
            bits[j] = <uint16_t>(_bf16_rounded(src[j]) >> 16)


cdef class _Operand:
    """A bfloat16 operand buffer argument (uint16 bits or rounded float32), checked:
    C-contiguous, the given shape, writeable."""
    cdef float* rounded
    cdef uint16_t* bits
    cdef object keep

    def __cinit__(self, op, Py_ssize_t rows, Py_ssize_t cols, str name, bint is_float32):
        self.rounded, self.bits, self.keep = NULL, NULL, op
        if op is None:
            return
        cdef float[:, ::1] r
        cdef uint16_t[:, ::1] b
        if not is_float32:
            raise ValueError(f"_cython_kernels: {name} (a bfloat16 operand) needs float32 data")
        if not isinstance(op, np.ndarray) or op.dtype not in (np.float32, np.uint16):
            raise ValueError(f"_cython_kernels: {name} must be a uint16 or float32 array, "
                             f"got {type(op).__name__} {getattr(op, 'dtype', '')}")
        if op.ndim != 2 or not op.flags.c_contiguous or not op.flags.writeable:
            raise ValueError(f"_cython_kernels: {name} must be a writeable C-contiguous 2-D array")
        _shape2(op.shape[0], op.shape[1], rows, cols, name)
        if rows == 0 or cols == 0:
            return
        if op.dtype == np.float32:
            r = op
            self.rounded = &r[0, 0]
        else:
            b = op
            self.bits = &b[0, 0]


cdef Py_ssize_t BF16_BLOCK = 4096     # elements per parallel work item of a conversion


def bf16_operand_flat(const float[::1] src, dst):   # IN (n,); OUT dst (n,)
    """dst = the bfloat16 operand of src: uint16 bits or rounded float32 (dst may be src).
    What ``fastrnn.precision`` converts whole arrays with when this extension is built."""
    cdef Py_ssize_t n = src.shape[0], blk, lo
    if not isinstance(dst, np.ndarray) or dst.ndim != 1:
        raise ValueError("_cython_kernels: dst must be a 1-D uint16 or float32 array")
    cdef _Operand op = _Operand(dst.reshape(1, -1), 1, n, "dst", True)
    if n == 0:
        return
    cdef const float* ps = &src[0]
    cdef float* pr = op.rounded
    cdef uint16_t* pb = op.bits
    cdef Py_ssize_t blocks = (n + BF16_BLOCK - 1) // BF16_BLOCK
    cdef int nt = _threads_for(n)
    with nogil:
        for blk in prange(blocks, num_threads=nt, schedule="static"):
            lo = blk * BF16_BLOCK
            _operand_row(ps + lo, NULL if pr == NULL else pr + lo, NULL if pb == NULL else pb + lo,
                         min(BF16_BLOCK, n - lo))


def exp_into(const floating[::1] x,    # IN  (n,)
             floating[::1] out):       # OUT (n,)
    """out = exp(x) with the kernels' own exp (fastmath for float32, libm for float64)."""
    _same_length(x.shape[0], out.shape[0], "out")
    cdef Py_ssize_t j
    with nogil:
        for j in range(x.shape[0]):
            out[j] = _exp(x[j])


def tanh_flat_into(const floating[::1] x,    # IN  (n,)
                   floating[::1] out):       # OUT (n,)
    """out = tanh(x) with the kernels' own tanh, any length (tests the approximation)."""
    _same_length(x.shape[0], out.shape[0], "out")
    cdef Py_ssize_t j
    with nogil:
        for j in range(x.shape[0]):
            out[j] = _tanh(x[j])


# --------------------------------------------------------------- array checks

def _arrays(**specs):
    """Name the bad argument when a kernel's array does not convert to its memoryview.

    ``specs`` lists a kernel's leading array arguments in order: "float" (the dtype of
    the first one, float32 or float64), "float64" or "intp", plus ",rows" (the last
    axis must be contiguous, rows may be strided), ",C" (C-contiguous) and ",out"
    (written, so it must be writeable); "?" allows None. Cython's own conversion error
    does not say which argument failed; this re-raises it with the name. The checks
    run only after a failure, so a good call pays nothing for them.
    """
    names = list(specs)

    def decorate(kernel):
        @functools.wraps(kernel)
        def call(*args, **kwargs):
            try:
                return kernel(*args, **kwargs)
            except (ValueError, TypeError) as err:
                problem = _diagnose(names, specs, args)
                if problem is None:
                    raise
                raise ValueError(f"_cython_kernels.{kernel.__name__}: {problem}") from err
        return call
    return decorate


cdef object _diagnose(list names, dict specs, tuple args):
    """The first argument of ``args`` that breaks its spec, described; else None."""
    ref = None
    for name, a in zip(names, args):
        spec = specs[name]
        if a is None:
            if "?" in spec:
                continue
            return f"{name} must be an array, got None"
        if not isinstance(a, np.ndarray):
            return f"{name} must be a numpy array, got {type(a).__name__}"
        if spec.startswith("float64"):
            want = np.dtype(np.float64)
        elif spec.startswith("intp"):
            want = np.dtype(np.intp)
        else:
            if ref is None:
                ref = a.dtype if a.dtype in (np.float32, np.float64) else np.dtype(np.float64)
            want = ref
        layout = "C-contiguous" if ",C" in spec else "row-contiguous"
        if a.dtype != want:
            return (f"{name} must be a {layout} {want} array, got {a.dtype} shape {a.shape}")
        if ",C" in spec and not a.flags.c_contiguous:
            return f"{name} must be a C-contiguous {want} array, got a strided one"
        last = a.ndim - 1        # no negative indices: this module is built with wraparound=False
        if ",rows" in spec and last >= 0 and a.shape[last] > 1 and a.strides[last] != a.itemsize:
            return f"the rows of {name} must be contiguous"
        if ",out" in spec and not a.flags.writeable:
            return f"{name} is read-only; the kernel writes it"
    return None


cdef int _shape2(Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t want_rows, Py_ssize_t want_cols,
                 str name) except -1:
    if rows != want_rows or cols != want_cols:
        raise ValueError(f"_cython_kernels: {name} must have shape ({want_rows}, {want_cols}), "
                         f"got ({rows}, {cols})")
    return 0


cdef int _same_length(Py_ssize_t n, Py_ssize_t want, str name) except -1:
    if n != want:
        raise ValueError(f"_cython_kernels: {name} must have length {want}, got {n}")
    return 0


cdef Py_ssize_t _row_stride(Py_ssize_t n_rows, Py_ssize_t n_cols, Py_ssize_t stride0,
                            Py_ssize_t stride1, Py_ssize_t itemsize, str name) except -1:
    """Row stride, in elements, of a 2-D view whose last axis must be contiguous."""
    if n_rows > 1 and n_cols > 1 and stride1 != itemsize:
        raise ValueError(f"_cython_kernels: the rows of {name} must be contiguous")
    if n_rows <= 1:
        return 0
    if stride0 % itemsize:
        raise ValueError(f"_cython_kernels: {name} has a misaligned row stride")
    return stride0 // itemsize


cdef int _check_ids(const cnp.npy_intp[::1] idx, Py_ssize_t high, str name) except -1:
    """Every id must lie in [0, high): the kernels index rows with them."""
    cdef Py_ssize_t r
    cdef bint bad = False
    with nogil:
        for r in range(idx.shape[0]):
            if idx[r] < 0 or idx[r] >= high:
                bad = True
                break
    if bad:
        raise ValueError(f"_cython_kernels: {name} must lie in [0, {high})")
    return 0


# ========================================================================== LSTM

cdef inline void _lstm_forward_row(floating* a,             # (4H,) in: x@Wx; out: gates
                                   const floating* ah,      # (4H,) prev_h @ Wh, or NULL
                                   const floating* b,       # (4H,) bias, or NULL
                                   const floating* prev_c,  # (H,)
                                   floating* next_c,        # (H,) out
                                   floating* next_h,        # (H,) out
                                   floating* tanh_c,        # (H,) out tanh(next_c), or NULL
                                   float* h_rounded,        # (H,) out bf16 operand, or NULL
                                   uint16_t* h_bits,        # (H,) out bf16 operand, or NULL
                                   Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating* i = a
    cdef floating* f = a + H
    cdef floating* o = a + 2 * H
    cdef floating* g = a + 3 * H
    # Separate short loops (rows stay in L1): each vectorizes, unlike one fused body.
    if ah != NULL:
        for j in range(4 * H):
            a[j] = a[j] + ah[j]
    if b != NULL:
        for j in range(4 * H):
            a[j] = a[j] + b[j]
    for j in range(3 * H):
        a[j] = _sigmoid(a[j])
    for j in range(H):
        g[j] = _tanh(g[j])
    for j in range(H):
        next_c[j] = f[j] * prev_c[j] + i[j] * g[j]
    for j in range(H):
        next_h[j] = _tanh(next_c[j])
    if tanh_c != NULL:
        memcpy(tanh_c, next_h, H * sizeof(floating))
    for j in range(H):
        next_h[j] = o[j] * next_h[j]
    if floating is float:
        _operand_row(next_h, h_rounded, h_bits, H)


cdef inline void _lstm_backward_row(const floating* gates,    # (4H,) i, f, o, g activations
                                    const floating* prev_c,   # (H,)
                                    const floating* tanh_c,   # (H,) tanh(next_c)
                                    const floating* dnext_h,  # (H,)
                                    const floating* dnext_c,  # (H,) may alias dprev_c
                                    floating* da,             # (4H,) out: pre-activation gradient
                                    floating* dprev_c,        # (H,) out
                                    float* da_rounded,        # (4H,) out bf16 operand, or NULL
                                    uint16_t* da_bits,        # (4H,) out bf16 operand, or NULL
                                    Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    cdef floating dh, dc, tc, i, f, o, g
    for j in range(H):
        dh = dnext_h[j]
        i, f, o, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        tc = tanh_c[j]
        # Same operation order as the reference, so float64 agrees to the last bits.
        dc = dnext_c[j] + dh * o * (1 - tc * tc)
        da[j] = dc * g * i * (1 - i)
        da[H + j] = dc * prev_c[j] * f * (1 - f)
        da[2 * H + j] = dh * tc * o * (1 - o)
        da[3 * H + j] = dc * i * (1 - g * g)
        dprev_c[j] = dc * f
    if floating is float:
        _operand_row(da, da_rounded, da_bits, 4 * H)


@_arrays(a="float,rows,out", ah="float,C?", b="float,C?", prev_c="float,rows",
         next_c="float,C,out", next_h="float,C,out", tanh_c="float,C,out?")
def lstm_cell_forward(floating[:, :] a,                     # IN x@Wx (N, 4H); OUT the gates
                      const floating[:, ::1] ah,            # IN (N, 4H) prev_h@Wh, or None
                      const floating[::1] b,                # IN (4H,) bias, or None
                      const floating[:, :] prev_c,          # IN (N, H)
                      floating[:, ::1] next_c,              # OUT (N, H)
                      floating[:, ::1] next_h,              # OUT (N, H)
                      floating[:, ::1] tanh_c=None,         # OUT (N, H) tanh(next_c), or None
                      h_op=None):                           # OUT (N, H) bf16 operand of next_h
    """The elementwise part of one LSTM step, in place: a + ah + b -> the gate
    activations [sigmoid i, f, o, tanh g]; next_c = f*prev_c + i*g; next_h = o*tanh(next_c).
    a and prev_c may have strided rows. h_op (float32 data only): uint16 or float32
    (may be next_h), receives next_h's bfloat16 operand in the same pass."""
    cdef Py_ssize_t N = prev_c.shape[0], H = prev_c.shape[1], n
    cdef Py_ssize_t a_rs = _row_stride(a.shape[0], a.shape[1], a.strides[0], a.strides[1],
                                       sizeof(floating), "a")
    cdef Py_ssize_t pc_rs = _row_stride(N, H, prev_c.strides[0], prev_c.strides[1],
                                        sizeof(floating), "prev_c")
    _shape2(a.shape[0], a.shape[1], N, 4 * H, "a")
    _shape2(next_c.shape[0], next_c.shape[1], N, H, "next_c")
    _shape2(next_h.shape[0], next_h.shape[1], N, H, "next_h")
    if ah is not None:
        _shape2(ah.shape[0], ah.shape[1], N, 4 * H, "ah")
    if b is not None:
        _same_length(b.shape[0], 4 * H, "b")
    if tanh_c is not None:
        _shape2(tanh_c.shape[0], tanh_c.shape[1], N, H, "tanh_c")
    cdef _Operand op = _Operand(h_op, N, H, "h_op", floating is float)
    if N == 0 or H == 0:
        return
    cdef float* por = op.rounded
    cdef uint16_t* pob = op.bits
    cdef floating* pa = &a[0, 0]
    cdef const floating* pah = NULL if ah is None else &ah[0, 0]
    cdef const floating* pb = NULL if b is None else &b[0]
    cdef const floating* ppc = &prev_c[0, 0]
    cdef floating* pnc = &next_c[0, 0]
    cdef floating* pnh = &next_h[0, 0]
    cdef floating* ptc = NULL if tanh_c is None else &tanh_c[0, 0]
    cdef int nt = _threads_for(N * H)
    with nogil:
        if nt == 1:
            for n in range(N):
                _lstm_forward_row(pa + n * a_rs, NULL if pah == NULL else pah + n * 4 * H, pb,
                                  ppc + n * pc_rs, pnc + n * H, pnh + n * H,
                                  NULL if ptc == NULL else ptc + n * H,
                                  NULL if por == NULL else por + n * H,
                                  NULL if pob == NULL else pob + n * H, H)
        else:
            for n in prange(N, num_threads=nt, schedule="static"):
                _lstm_forward_row(pa + n * a_rs, NULL if pah == NULL else pah + n * 4 * H, pb,
                                  ppc + n * pc_rs, pnc + n * H, pnh + n * H,
                                  NULL if ptc == NULL else ptc + n * H,
                                  NULL if por == NULL else por + n * H,
                                  NULL if pob == NULL else pob + n * H, H)


@_arrays(gates="float,rows", prev_c="float,rows", tanh_c="float,C", dnext_h="float,C",
         dnext_c="float,C", da="float,C,out", dprev_c="float,C,out")
def lstm_cell_backward(const floating[:, :] gates,      # IN (N, 4H) activations i, f, o, g
                       const floating[:, :] prev_c,     # IN (N, H)
                       const floating[:, ::1] tanh_c,   # IN (N, H) tanh(next_c)
                       const floating[:, ::1] dnext_h,  # IN (N, H)
                       const floating[:, ::1] dnext_c,  # IN (N, H), may be dprev_c itself
                       floating[:, ::1] da,             # OUT (N, 4H)
                       floating[:, ::1] dprev_c,        # OUT (N, H)
                       da_op=None):                     # OUT (N, 4H) bf16 operand of da
    """Gradient of one LSTM step's elementwise part; gates and prev_c may have strided rows.
    da_op (float32 data only): uint16 or float32, receives da's bfloat16 operand in the
    same pass."""
    cdef Py_ssize_t N = tanh_c.shape[0], H = tanh_c.shape[1], n
    cdef Py_ssize_t g_rs = _row_stride(gates.shape[0], gates.shape[1], gates.strides[0],
                                       gates.strides[1], sizeof(floating), "gates")
    cdef Py_ssize_t pc_rs = _row_stride(prev_c.shape[0], prev_c.shape[1], prev_c.strides[0],
                                        prev_c.strides[1], sizeof(floating), "prev_c")
    _shape2(gates.shape[0], gates.shape[1], N, 4 * H, "gates")
    _shape2(prev_c.shape[0], prev_c.shape[1], N, H, "prev_c")
    _shape2(dnext_h.shape[0], dnext_h.shape[1], N, H, "dnext_h")
    _shape2(dnext_c.shape[0], dnext_c.shape[1], N, H, "dnext_c")
    _shape2(da.shape[0], da.shape[1], N, 4 * H, "da")
    _shape2(dprev_c.shape[0], dprev_c.shape[1], N, H, "dprev_c")
    cdef _Operand op = _Operand(da_op, N, 4 * H, "da_op", floating is float)
    if N == 0 or H == 0:
        return
    cdef float* por = op.rounded
    cdef uint16_t* pob = op.bits
    cdef const floating* pg = &gates[0, 0]
    cdef const floating* ppc = &prev_c[0, 0]
    cdef const floating* ptc = &tanh_c[0, 0]
    cdef const floating* pdh = &dnext_h[0, 0]
    cdef const floating* pdc = &dnext_c[0, 0]
    cdef floating* pda = &da[0, 0]
    cdef floating* pdpc = &dprev_c[0, 0]
    cdef int nt = _threads_for(N * H)
    with nogil:
        if nt == 1:
            for n in range(N):
                _lstm_backward_row(pg + n * g_rs, ppc + n * pc_rs, ptc + n * H, pdh + n * H,
                                   pdc + n * H, pda + n * 4 * H, pdpc + n * H,
                                   NULL if por == NULL else por + n * 4 * H,
                                   NULL if pob == NULL else pob + n * 4 * H, H)
        else:
            for n in prange(N, num_threads=nt, schedule="static"):
                _lstm_backward_row(pg + n * g_rs, ppc + n * pc_rs, ptc + n * H, pdh + n * H,
                                   pdc + n * H, pda + n * 4 * H, pdpc + n * H,
                                   NULL if por == NULL else por + n * 4 * H,
                                   NULL if pob == NULL else pob + n * 4 * H, H)


# =========================================================================== RNN

@_arrays(a="float,C", ah="float,C", b="float,C", next_h="float,C,out")
def rnn_cell_forward(const floating[:, ::1] a,     # IN (N, H) x@Wx
                     const floating[:, ::1] ah,    # IN (N, H) prev_h@Wh
                     const floating[::1] b,        # IN (H,)
                     floating[:, ::1] next_h):     # OUT (N, H)
    """next_h = tanh(a + ah + b)."""
    cdef Py_ssize_t N = next_h.shape[0], H = next_h.shape[1], n, j
    _shape2(a.shape[0], a.shape[1], N, H, "a")
    _shape2(ah.shape[0], ah.shape[1], N, H, "ah")
    _same_length(b.shape[0], H, "b")
    cdef int nt = _threads_for(N * H)
    with nogil:
        if nt == 1:
            for n in range(N):
                for j in range(H):
                    next_h[n, j] = _tanh(a[n, j] + ah[n, j] + b[j])
        else:
            for n in prange(N, num_threads=nt, schedule="static"):
                for j in range(H):
                    next_h[n, j] = _tanh(a[n, j] + ah[n, j] + b[j])


@_arrays(dnext_h="float,C", next_h="float,C", da="float,C,out")
def rnn_cell_backward(const floating[:, ::1] dnext_h,   # IN (N, H)
                      const floating[:, ::1] next_h,    # IN (N, H)
                      floating[:, ::1] da):             # OUT (N, H)
    """da = dnext_h * (1 - next_h**2)."""
    cdef Py_ssize_t N = next_h.shape[0], H = next_h.shape[1], n, j
    _shape2(dnext_h.shape[0], dnext_h.shape[1], N, H, "dnext_h")
    _shape2(da.shape[0], da.shape[1], N, H, "da")
    cdef int nt = _threads_for(N * H)
    with nogil:
        if nt == 1:
            for n in range(N):
                for j in range(H):
                    da[n, j] = dnext_h[n, j] * (1 - next_h[n, j] * next_h[n, j])
        else:
            for n in prange(N, num_threads=nt, schedule="static"):
                for j in range(H):
                    da[n, j] = dnext_h[n, j] * (1 - next_h[n, j] * next_h[n, j])


# ===================================================================== embedding

cdef void _embedding_columns(const cnp.npy_intp* idx, const floating* dout, floating* dW,
                             Py_ssize_t R, Py_ssize_t D, Py_ssize_t c0,
                             Py_ssize_t c1) noexcept nogil:
    """dW[idx[r], c0:c1] += dout[r, c0:c1] for every r, in order (like np.add.at)."""
    cdef Py_ssize_t r, j
    cdef floating* row
    for r in range(R):
        row = dW + idx[r] * D
        for j in range(c0, c1):
            row[j] = row[j] + dout[r * D + j]


@_arrays(idx="intp,C", dout="float,C", dW="float,C,out")
def embedding_backward(const cnp.npy_intp[::1] idx,    # IN (R,) ids in [0, V)
                       const floating[:, ::1] dout,    # IN (R, D)
                       floating[:, ::1] dW):           # OUT (V, D), zeroed by the caller
    """Scatter-add: dW[idx[r]] += dout[r]."""
    cdef Py_ssize_t R = dout.shape[0], D = dout.shape[1], V = dW.shape[0]
    cdef Py_ssize_t blk, nblocks, width = 64
    _same_length(idx.shape[0], R, "idx")
    _shape2(V, dW.shape[1], V, D, "dW")
    _check_ids(idx, V, "idx")
    if R == 0 or D == 0:
        return
    cdef const cnp.npy_intp* ix = &idx[0]
    cdef const floating* g = &dout[0, 0]
    cdef floating* w = &dW[0, 0]
    cdef int nt = _threads_for(R * D)
    nblocks = (D + width - 1) // width
    with nogil:
        if nt == 1 or nblocks == 1:
            _embedding_columns(ix, g, w, R, D, 0, D)
        else:
            # Each thread owns whole column blocks of dW: no two threads touch one element.
            for blk in prange(nblocks, num_threads=nt, schedule="static"):
                _embedding_columns(ix, g, w, R, D, blk * width, min(D, (blk + 1) * width))


# ======================================================================= softmax

cdef inline double _softmax_xent_row(const floating* x,   # (V,) scores
                                     cnp.npy_intp y,      # target
                                     floating weight,     # mask value of this row
                                     floating scale,      # multiplies the gradient
                                     floating* dx,        # (V,) out, may be x itself
                                     Py_ssize_t V) noexcept nogil:
    """One fused pass over a row: max, exp, log-sum-exp, loss, gradient.
    Returns weight * (log-sum-exp - x[y]), the row's loss."""
    cdef Py_ssize_t j, k, V8 = V - V % 8
    cdef floating lane_max[8]
    cdef floating lane_sum[8]      # positive terms, <= 1 each: no cancellation to fear
    cdef floating m, xy, s_inv, v
    cdef double s
    if weight == 0:
        memset(dx, 0, V * sizeof(floating))
        return 0.0
    # Eight independent lanes: gcc turns each inner k-loop into one SIMD instruction
    # (the max only when x is read once into v).
    for k in range(8):
        lane_max[k] = x[0]
        lane_sum[k] = 0
    for j in range(0, V8, 8):
        for k in range(8):
            v = x[j + k]
            lane_max[k] = v if v > lane_max[k] else lane_max[k]
    for j in range(V8, V):
        lane_max[0] = x[j] if x[j] > lane_max[0] else lane_max[0]
    m = lane_max[0]
    for k in range(1, 8):
        m = lane_max[k] if lane_max[k] > m else m
    xy = x[y] - m                          # read before dx (maybe x) is overwritten
    for j in range(0, V8, 8):
        for k in range(8):
            v = _exp(x[j + k] - m)
            dx[j + k] = v
            lane_sum[k] = lane_sum[k] + v
    for j in range(V8, V):
        dx[j] = _exp(x[j] - m)
        lane_sum[0] = lane_sum[0] + dx[j]
    s = 0
    for k in range(8):
        s += lane_sum[k]
    s_inv = <floating>(weight * scale / s)
    for j in range(V):
        dx[j] = dx[j] * s_inv
    dx[y] -= weight * scale
    return weight * (log(s) - xy)


@_arrays(x="float,C", y="intp,C", weight="float,C?", dx="float,C,out", loss="float64,C,out")
def softmax_xent_rows(const floating[:, ::1] x,        # IN (R, V) scores
                      const cnp.npy_intp[::1] y,       # IN (R,) targets in [0, V)
                      const floating[::1] weight,      # IN (R,) row weights, or None (ones)
                      floating[:, ::1] dx,             # OUT (R, V), may be x itself
                      double[::1] loss,                # OUT (R,) float64
                      double scale):
    """Row-wise weighted softmax cross-entropy: dx = scale * weight * (softmax(x) - onehot(y)),
    loss = weight * (logsumexp(x) - x[y]) per row."""
    cdef Py_ssize_t R = x.shape[0], V = x.shape[1], r
    _shape2(dx.shape[0], dx.shape[1], R, V, "dx")
    _same_length(loss.shape[0], R, "loss")
    _same_length(y.shape[0], R, "y")
    if weight is not None:
        _same_length(weight.shape[0], R, "weight")
    _check_ids(y, V, "y")
    if R == 0:
        return
    cdef const floating* xs = &x[0, 0]
    cdef floating* out = &dx[0, 0]
    cdef const floating* w = NULL if weight is None else &weight[0]
    cdef double* lr = &loss[0]
    cdef const cnp.npy_intp* ys = &y[0]
    cdef floating sc = <floating>scale
    cdef int nt = _threads_for(R * V)
    with nogil:
        if nt == 1:
            for r in range(R):
                lr[r] = _softmax_xent_row(xs + r * V, ys[r], 1 if w == NULL else w[r], sc,
                                          out + r * V, V)
        else:
            # Per-row losses land in their own slot; they are summed after the loop.
            for r in prange(R, num_threads=nt, schedule="static"):
                lr[r] = _softmax_xent_row(xs + r * V, ys[r], 1 if w == NULL else w[r], sc,
                                          out + r * V, V)


# ================================================================== elementwise

@_arrays(x="float,C", out="float,C,out")
def tanh_into(const floating[:, ::1] x,    # IN (N, H)
              floating[:, ::1] out):       # OUT (N, H)
    """out = tanh(x)."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], n, j
    _shape2(out.shape[0], out.shape[1], N, H, "out")
    cdef int nt = _threads_for(N * H)
    with nogil:
        if nt == 1:
            for n in range(N):
                for j in range(H):
                    out[n, j] = _tanh(x[n, j])
        else:
            for n in prange(N, num_threads=nt, schedule="static"):
                for j in range(H):
                    out[n, j] = _tanh(x[n, j])


# ========================================================================== Adam

cdef enum:
    ADAM_CHUNK = 2048    # elements per chunk: its scratch (and the chunk) stay in L1


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef void _adam_chunk(floating* w,          # (n,) weights, updated
                      const floating* dw,   # (n,) gradient
                      floating* m,          # (n,) first moment, updated
                      floating* v,          # (n,) second moment, updated
                      floating lr, floating b1, floating c1, floating b2, floating c2,
                      floating eps, floating bc1, floating bc2, Py_ssize_t n) noexcept nogil:
    """n <= ADAM_CHUNK elements of adam_update, in the reference's order of operations
    (c1 = 1 - beta1, c2 = 1 - beta2, bc1, bc2 the bias corrections). Three loops over a
    chunk that stays in L1: the first and last vectorize; the square roots sit alone
    because libm's errno rule keeps gcc from vectorizing a loop that calls sqrt."""
    cdef floating denom[ADAM_CHUNK]
    cdef Py_ssize_t i
    cdef floating g
    for i in range(n):
        g = dw[i]
        m[i] = b1 * m[i] + c1 * g
        v[i] = b2 * v[i] + c2 * (g * g)
        denom[i] = v[i] / bc2
    for i in range(n):
        denom[i] = _sqrt(denom[i])
    for i in range(n):
        w[i] = w[i] - lr * (m[i] / bc1) / (denom[i] + eps)


def _adam_flat(floating[::1] w,           # IN/OUT (n,) weights
               const floating[::1] dw,    # IN (n,) gradient
               floating[::1] m,           # IN/OUT (n,) first moment
               floating[::1] v,           # IN/OUT (n,) second moment
               double learning_rate, double beta1, double beta2, double epsilon,
               double bias1, double bias2):
    cdef Py_ssize_t n = w.shape[0], k
    cdef Py_ssize_t chunks = (n + ADAM_CHUNK - 1) // ADAM_CHUNK
    if n == 0:
        return
    cdef floating* pw = &w[0]
    cdef const floating* pdw = &dw[0]
    cdef floating* pm = &m[0]
    cdef floating* pv = &v[0]
    # The float64 scalars cast once to the weights' type, as NumPy does with a Python float.
    cdef floating lr = <floating>learning_rate, eps = <floating>epsilon
    cdef floating b1 = <floating>beta1, c1 = <floating>(1 - beta1)
    cdef floating b2 = <floating>beta2, c2 = <floating>(1 - beta2)
    cdef floating bc1 = <floating>bias1, bc2 = <floating>bias2
    cdef int nt = _threads_for(n)
    with nogil:
        if nt == 1:
            for k in range(chunks):
                _adam_chunk(pw + k * ADAM_CHUNK, pdw + k * ADAM_CHUNK, pm + k * ADAM_CHUNK,
                            pv + k * ADAM_CHUNK, lr, b1, c1, b2, c2, eps, bc1, bc2,
                            min(ADAM_CHUNK, n - k * ADAM_CHUNK))
        else:
            # Each thread owns whole chunks: no element is touched by two threads.
            for k in prange(chunks, num_threads=nt, schedule="static"):
                _adam_chunk(pw + k * ADAM_CHUNK, pdw + k * ADAM_CHUNK, pm + k * ADAM_CHUNK,
                            pv + k * ADAM_CHUNK, lr, b1, c1, b2, c2, eps, bc1, bc2,
                            min(ADAM_CHUNK, n - k * ADAM_CHUNK))


def adam_update(w, dw, m, v, double learning_rate, double beta1, double beta2, double epsilon,
                double bias1, double bias2):
    """One Adam step in place (the contract of numpy_backend.adam_update).

    w, dw, m, v: C-contiguous arrays of one shape and float dtype, any number of
    dimensions; w, m, v are updated. bias1 = 1 - beta1**t, bias2 = 1 - beta2**t.
    """
    if not isinstance(w, np.ndarray) or w.dtype not in (np.float32, np.float64):
        raise ValueError(f"_cython_kernels: w must be a float32 or float64 array, got "
                         f"{getattr(w, 'dtype', type(w).__name__)}")
    for name, a, written in (("w", w, True), ("dw", dw, False), ("m", m, True), ("v", v, True)):
        if (not isinstance(a, np.ndarray) or a.shape != w.shape or a.dtype != w.dtype
                or not a.flags.c_contiguous):
            raise ValueError(f"_cython_kernels: {name} must be a C-contiguous {w.dtype} array "
                             f"of shape {w.shape}, got {getattr(a, 'dtype', type(a).__name__)} "
                             f"shape {np.shape(a)}")
        if written and not a.flags.writeable:
            raise ValueError(f"_cython_kernels: {name} is read-only; adam_update writes it")
    _adam_flat(w.reshape(-1), dw.reshape(-1), m.reshape(-1), v.reshape(-1), learning_rate,
               beta1, beta2, epsilon, bias1, bias2)
