# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Fused elementwise kernels of the Cython/OpenMP backend (``fastrnn.backends._cython_kernels``).

Matrix products stay in a BLAS: the Python wrapper (``cython_backend.py``) and
the sequence loops below call ``fastrnn.gemm.mm`` (the default GEMM provider:
NumPy's BLAS, or oneDNN for large products); everything elementwise around
them runs here in one pass per row, in ``nogil`` loops parallel over rows
(``prange``), each thread owning whole rows so no output is shared.

Arrays arrive as numpy arrays whose last axis is contiguous; rows may be
strided (a timestep slice ``x[:, t, :]`` of an ``(N, T, K)`` buffer has a row
stride of ``T * K``). Every entry point checks dtype, shape and that layout, so
a wrong call raises instead of reading out of bounds.

float32 uses vectorizable polynomial ``exp``/``tanh`` (a few ulp, far inside
the 1e-4 float32 contract); float64 uses libm so gradient checks see exact math.
Sigmoid is ``0.5 * (1 + tanh(x / 2))`` like the reference: it never overflows.
"""
cimport numpy as cnp
from cython.parallel cimport prange
from libc.math cimport exp, log, tanh, fabsf, sqrt, sqrtf
from libc.stdint cimport int32_t
from libc.string cimport memcpy, memset

cimport openmp

import numpy as np

from fastrnn.gemm import mm as _mm   # a @ b through the default GEMM provider

cnp.import_array()

ctypedef fused real:
    float
    double

# Below this many elements a kernel runs on the calling thread. Kernels alternate
# with BLAS calls, and every parallel region wakes a team that then competes with
# OpenBLAS's threads for the cores; below ~a quarter million elements (~1 ms of
# work) that costs more than it saves (measured on 2 cores, N=128, H=512).
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

cdef union _Float32Bits:
    float f
    int32_t i


cdef inline float _expf(float x) noexcept nogil:
    """exp(x) in float32: range reduction x = n ln2 + r, a degree-6 polynomial in r
    (Cephes expf coefficients), then scale by 2^n built from its exponent bits.
    Branch-free float32 arithmetic (no double literals, no calls), so gcc
    vectorizes the loops that call it."""
    cdef float hi = 88.0, lo = -88.0   # exp(-88) rounds n to -127, whose scale is 0
    cdef float log2e = 1.44269504088896341, round_shift = 127.5
    cdef float ln2_hi = 0.693359375, ln2_lo = -2.12194440e-4   # ln2 = hi + lo, exact n*hi
    cdef float p0 = 1.9875691500e-4, p1 = 1.3981999507e-3, p2 = 8.3334519073e-3
    cdef float p3 = 4.1665795894e-2, p4 = 1.6666665459e-1, p5 = 5.0000001201e-1, one = 1.0
    cdef _Float32Bits scale
    cdef float r, p
    cdef int n
    x = hi if x > hi else x
    x = lo if x < lo else x
    n = <int>(x * log2e + round_shift) - 127   # round to nearest: the argument is > 0
    r = x - n * ln2_hi
    r = r - n * ln2_lo
    p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * r * r + r + one
    scale.i = (n + 127) << 23
    return p * scale.f


cdef inline float _tanhf(float x) noexcept nogil:
    """tanh(x) in float32: an odd polynomial for |x| < 0.625 (keeps full relative
    precision near 0, Cephes tanhf), else 1 - 2 / (exp(2|x|) + 1). Both are
    computed and one selected, so loops over it vectorize."""
    cdef float q0 = -5.70498872745e-3, q1 = 2.06390887954e-2, q2 = -5.37397155531e-2
    cdef float q3 = 1.33314422036e-1, q4 = -3.33332819422e-1
    cdef float one = 1.0, two = 2.0, cut = 0.625
    cdef float ax = fabsf(x)
    cdef float z = x * x
    cdef float small = ((((q0 * z + q1) * z + q2) * z + q3) * z + q4) * z * x + x
    cdef float large = one - two / (_expf(two * ax) + one)
    large = -large if x < 0 else large
    return small if ax < cut else large


cdef inline real _tanh(real x) noexcept nogil:
    if real is float:
        return _tanhf(x)
    else:
        return tanh(x)


cdef inline real _exp(real x) noexcept nogil:
    if real is float:
        return _expf(x)
    else:
        return exp(x)


cdef inline real _sigmoid(real x) noexcept nogil:
    cdef real half = 0.5       # typed: a bare 0.5 would promote float32 math to double
    return half * (1 + _tanh(half * x))


# --------------------------------------------------------------- array checks

cdef int _typenum(real* dummy) noexcept nogil:
    if real is float:
        return cnp.NPY_FLOAT32
    else:
        return cnp.NPY_FLOAT64


cdef Py_ssize_t _row_stride(object a, str name, int typenum, Py_ssize_t ncols) except -1:
    """Row stride (in elements) of the 2-D, row-contiguous array ``a`` of ``ncols`` columns."""
    if (not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != ncols
            or cnp.PyArray_TYPE(<cnp.ndarray>a) != typenum):
        raise ValueError(f"_cython_kernels: {name} must be a 2-D {_dtype_name(typenum)} array "
                         f"with {ncols} columns, got {getattr(a, 'dtype', type(a).__name__)} "
                         f"shape {np.shape(a)}")
    if a.shape[0] > 1 and ncols > 1 and a.strides[1] != a.itemsize:
        raise ValueError(f"_cython_kernels: the rows of {name} must be contiguous")
    if a.strides[0] % a.itemsize:
        raise ValueError(f"_cython_kernels: {name} has a misaligned row stride")
    return a.strides[0] // a.itemsize


cdef int _check(object a, str name, int typenum, Py_ssize_t nrows, Py_ssize_t ncols) except -1:
    """``a`` must be a C-contiguous (nrows, ncols) array of ``typenum`` ((ncols,) if nrows < 0)."""
    cdef tuple want
    if nrows < 0:
        want = (ncols,)
    else:
        want = (nrows, ncols)
    if (not isinstance(a, np.ndarray) or a.shape != want
            or cnp.PyArray_TYPE(<cnp.ndarray>a) != typenum
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)):
        raise ValueError(f"_cython_kernels: {name} must be a C-contiguous {_dtype_name(typenum)} "
                         f"array of shape {want}, got {getattr(a, 'dtype', type(a).__name__)} "
                         f"shape {np.shape(a)}")
    return 0


cdef str _dtype_name(int typenum):
    return "float32" if typenum == cnp.NPY_FLOAT32 else "float64"


cdef inline void* _data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# ========================================================================== LSTM

cdef inline void _lstm_forward_row(real* a,             # (4H,) in: x@Wx [+ ah + b]; out: gates
                                   const real* ah,      # (4H,) prev_h @ Wh, or NULL (already in a)
                                   const real* b,       # (4H,) bias, or NULL
                                   const real* prev_c,  # (H,) or NULL for a zero cell state
                                   real* next_c,        # (H,) out
                                   real* next_h,        # (H,) out
                                   real* tanh_c,        # (H,) out tanh(next_c), or NULL
                                   real* h_copy,        # (H,) second copy of next_h, or NULL
                                   Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    cdef real* i = a
    cdef real* f = a + H
    cdef real* o = a + 2 * H
    cdef real* g = a + 3 * H
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
    if prev_c != NULL:
        for j in range(H):
            next_c[j] = f[j] * prev_c[j] + i[j] * g[j]
    else:
        for j in range(H):
            next_c[j] = i[j] * g[j]
    for j in range(H):
        next_h[j] = _tanh(next_c[j])
    if tanh_c != NULL:
        memcpy(tanh_c, next_h, H * sizeof(real))
    for j in range(H):
        next_h[j] = o[j] * next_h[j]
    if h_copy != NULL:
        memcpy(h_copy, next_h, H * sizeof(real))


cdef inline void _lstm_backward_row(const real* gates,    # (4H,) i, f, o, g activations
                                    const real* prev_c,   # (H,)
                                    const real* tanh_c,   # (H,) tanh(next_c)
                                    const real* dnext_h,  # (H,) strided by dh_step
                                    Py_ssize_t dh_step,
                                    const real* dh_add,   # (H,) added to dnext_h, or NULL
                                    const real* dnext_c,  # (H,) may alias dprev_c
                                    real* da,             # (4H,) out: gradient of the pre-activations
                                    real* dprev_c,        # (H,) out
                                    Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    cdef real dh, dc, tc, i, f, o, g
    cdef real* dh_row = da + 2 * H    # the o block of da holds dnext_h until it is overwritten
    # Gather the upstream gradient first, so the main loop is unit-stride and vectorizes.
    if dh_add != NULL:
        for j in range(H):
            dh_row[j] = dnext_h[j * dh_step] + dh_add[j]
    else:
        for j in range(H):
            dh_row[j] = dnext_h[j * dh_step]
    for j in range(H):
        dh = dh_row[j]
        i, f, o, g = gates[j], gates[H + j], gates[2 * H + j], gates[3 * H + j]
        tc = tanh_c[j]
        # Same operation order as the reference, so float64 agrees to the last bits.
        dc = dnext_c[j] + dh * o * (1 - tc * tc)
        da[j] = dc * g * i * (1 - i)
        da[H + j] = dc * prev_c[j] * f * (1 - f)
        da[2 * H + j] = dh * tc * o * (1 - o)
        da[3 * H + j] = dc * i * (1 - g * g)
        dprev_c[j] = dc * f


cdef void _lstm_forward_rows(real* a, Py_ssize_t a_rs, real* ah, Py_ssize_t ah_rs,
                             const real* b, real* prev_c, Py_ssize_t pc_rs,
                             real* next_c, Py_ssize_t nc_rs, real* next_h, Py_ssize_t nh_rs,
                             real* tanh_c, Py_ssize_t tc_rs, real* h_copy, Py_ssize_t hc_rs,
                             Py_ssize_t N, Py_ssize_t H) noexcept nogil:
    """_lstm_forward_row for every row n < N; a pointer argument may be NULL (then its
    row stride is ignored), each other pointer advances by its row stride. (Nullable
    inputs are not declared const: Cython's NULL-or-offset temporaries are not.)"""
    cdef Py_ssize_t n
    cdef int nt = _threads_for(N * H)
    if nt == 1:
        for n in range(N):
            _lstm_forward_row(a + n * a_rs, NULL if ah == NULL else ah + n * ah_rs, b,
                              NULL if prev_c == NULL else prev_c + n * pc_rs,
                              next_c + n * nc_rs, next_h + n * nh_rs,
                              NULL if tanh_c == NULL else tanh_c + n * tc_rs,
                              NULL if h_copy == NULL else h_copy + n * hc_rs, H)
    else:
        for n in prange(N, num_threads=nt, schedule="static"):
            _lstm_forward_row(a + n * a_rs, NULL if ah == NULL else ah + n * ah_rs, b,
                              NULL if prev_c == NULL else prev_c + n * pc_rs,
                              next_c + n * nc_rs, next_h + n * nh_rs,
                              NULL if tanh_c == NULL else tanh_c + n * tc_rs,
                              NULL if h_copy == NULL else h_copy + n * hc_rs, H)


cdef void _lstm_backward_rows(const real* gates, Py_ssize_t g_rs, const real* prev_c, Py_ssize_t pc_rs,
                              const real* tanh_c, Py_ssize_t tc_rs,
                              const real* dnext_h, Py_ssize_t dh_rs, Py_ssize_t dh_cs,
                              real* dh_add, Py_ssize_t dha_rs,
                              const real* dnext_c, Py_ssize_t dc_rs,
                              real* da, Py_ssize_t da_rs, real* dprev_c, Py_ssize_t dpc_rs,
                              Py_ssize_t N, Py_ssize_t H) noexcept nogil:
    """_lstm_backward_row for every row; dnext_h element (n, j) is at n*dh_rs + j*dh_cs."""
    cdef Py_ssize_t n
    cdef int nt = _threads_for(N * H)
    if nt == 1:
        for n in range(N):
            _lstm_backward_row(gates + n * g_rs, prev_c + n * pc_rs, tanh_c + n * tc_rs,
                               dnext_h + n * dh_rs, dh_cs,
                               NULL if dh_add == NULL else dh_add + n * dha_rs,
                               dnext_c + n * dc_rs, da + n * da_rs, dprev_c + n * dpc_rs, H)
    else:
        for n in prange(N, num_threads=nt, schedule="static"):
            _lstm_backward_row(gates + n * g_rs, prev_c + n * pc_rs, tanh_c + n * tc_rs,
                               dnext_h + n * dh_rs, dh_cs,
                               NULL if dh_add == NULL else dh_add + n * dha_rs,
                               dnext_c + n * dc_rs, da + n * da_rs, dprev_c + n * dpc_rs, H)


cdef _lstm_cell_forward(real* kind, cnp.ndarray a, object ah, object b, cnp.ndarray prev_c,
                        cnp.ndarray next_c, cnp.ndarray next_h, object tanh_c):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = prev_c.shape[0], H = prev_c.shape[1]
    cdef Py_ssize_t a_rs = _row_stride(a, "a", tn, 4 * H)
    cdef Py_ssize_t pc_rs = _row_stride(prev_c, "prev_c", tn, H)
    cdef Py_ssize_t ah_rs = 0, tc_rs = 0
    if a.shape[0] != N:
        raise ValueError("_cython_kernels: a and prev_c must have the same number of rows")
    _check(next_c, "next_c", tn, N, H)
    _check(next_h, "next_h", tn, N, H)
    if ah is not None:
        _check(ah, "ah", tn, N, 4 * H)
        ah_rs = 4 * H
    if b is not None:
        _check(b, "b", tn, -1, 4 * H)
    if tanh_c is not None:
        _check(tanh_c, "tanh_c", tn, N, H)
        tc_rs = H
    cdef real* pa = <real*>_data(a)
    cdef real* pah = <real*>_data(ah)
    cdef real* pb = <real*>_data(b)
    cdef real* ppc = <real*>_data(prev_c)
    cdef real* pnc = <real*>_data(next_c)
    cdef real* pnh = <real*>_data(next_h)
    cdef real* ptc = <real*>_data(tanh_c)
    with nogil:
        _lstm_forward_rows(pa, a_rs, pah, ah_rs, pb, ppc, pc_rs, pnc, H, pnh, H, ptc, tc_rs,
                           NULL, 0, N, H)


def lstm_cell_forward(cnp.ndarray a, ah, b, cnp.ndarray prev_c, cnp.ndarray next_c,
                      cnp.ndarray next_h, tanh_c=None):
    """The elementwise part of one LSTM step, in place.

    a (N, 4H): in x@Wx (plus prev_h@Wh and b if those are None), out the gates
    [sigmoid i, f, o, tanh g]; ah (N, 4H) or None; b (4H,) or None;
    prev_c (N, H); next_c, next_h (N, H) and tanh_c (N, H) or None written.
    """
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        _lstm_cell_forward(<float*>NULL, a, ah, b, prev_c, next_c, next_h, tanh_c)
    else:
        _lstm_cell_forward(<double*>NULL, a, ah, b, prev_c, next_c, next_h, tanh_c)


cdef _lstm_cell_backward(real* kind, cnp.ndarray gates, cnp.ndarray prev_c, cnp.ndarray tanh_c,
                         cnp.ndarray dnext_h, cnp.ndarray dnext_c, cnp.ndarray da,
                         cnp.ndarray dprev_c):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = tanh_c.shape[0], H = tanh_c.shape[1]
    _check(tanh_c, "tanh_c", tn, N, H)
    cdef Py_ssize_t g_rs = _row_stride(gates, "gates", tn, 4 * H)
    cdef Py_ssize_t pc_rs = _row_stride(prev_c, "prev_c", tn, H)
    if gates.shape[0] != N or prev_c.shape[0] != N:
        raise ValueError("_cython_kernels: gates, prev_c and tanh_c must have the same number of rows")
    _check(dnext_h, "dnext_h", tn, N, H)
    _check(dnext_c, "dnext_c", tn, N, H)
    _check(da, "da", tn, N, 4 * H)
    _check(dprev_c, "dprev_c", tn, N, H)
    cdef real* pg = <real*>_data(gates)
    cdef real* ppc = <real*>_data(prev_c)
    cdef real* ptc = <real*>_data(tanh_c)
    cdef real* pdh = <real*>_data(dnext_h)
    cdef real* pdc = <real*>_data(dnext_c)
    cdef real* pda = <real*>_data(da)
    cdef real* pdpc = <real*>_data(dprev_c)
    with nogil:
        _lstm_backward_rows(pg, g_rs, ppc, pc_rs, ptc, H, pdh, H, 1, NULL, 0, pdc, H,
                            pda, 4 * H, pdpc, H, N, H)


def lstm_cell_backward(cnp.ndarray gates, cnp.ndarray prev_c, cnp.ndarray tanh_c,
                       cnp.ndarray dnext_h, cnp.ndarray dnext_c, cnp.ndarray da,
                       cnp.ndarray dprev_c):
    """Gradient of one LSTM step's elementwise part.

    gates (N, 4H), prev_c, tanh_c = tanh(next_c), dnext_h, dnext_c (N, H)
    -> da (N, 4H) and dprev_c (N, H) written in place.
    """
    if cnp.PyArray_TYPE(gates) == cnp.NPY_FLOAT32:
        _lstm_cell_backward(<float*>NULL, gates, prev_c, tanh_c, dnext_h, dnext_c, da, dprev_c)
    else:
        _lstm_cell_backward(<double*>NULL, gates, prev_c, tanh_c, dnext_h, dnext_c, da, dprev_c)


cdef _lstm_forward(real* kind, cnp.ndarray gates, cnp.ndarray z, cnp.ndarray b, object Wh,
                   cnp.ndarray c, cnp.ndarray tanh_c, cnp.ndarray h, cnp.ndarray ah):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = h.shape[0], T = h.shape[1], H = h.shape[2]
    cdef Py_ssize_t K = z.shape[2], D = K - H - 1
    cdef Py_ssize_t t
    _check(gates.reshape(N * T, 4 * H), "gates", tn, N * T, 4 * H)
    _check(z.reshape(N * T, K), "z", tn, N * T, K)
    _check(c.reshape(N * T, H), "c", tn, N * T, H)
    _check(tanh_c.reshape(N * T, H), "tanh_c", tn, N * T, H)
    _check(h.reshape(N * T, H), "h", tn, N * T, H)
    _check(ah, "ah", tn, N, 4 * H)
    _check(b, "b", tn, -1, 4 * H)
    if gates.shape[0] != N or gates.shape[1] != T or z.shape[0] != N or z.shape[1] != T or D < 0:
        raise ValueError("_cython_kernels: lstm_forward buffers disagree on N, T")
    cdef real* G = <real*>_data(gates)
    cdef real* Z = <real*>_data(z)
    cdef real* C = <real*>_data(c)
    cdef real* TC = <real*>_data(tanh_c)
    cdef real* Hs = <real*>_data(h)
    cdef real* AH = <real*>_data(ah)
    cdef real* B = <real*>_data(b)
    for t in range(T):
        _mm(z[:, t, D:D + H], Wh, ah)     # BLAS, GIL released inside it
        with nogil:
            _lstm_forward_rows(G + t * 4 * H, T * 4 * H, AH, 4 * H, B,
                               NULL if t == 0 else C + (t - 1) * H, T * H,
                               C + t * H, T * H, Hs + t * H, T * H, TC + t * H, T * H,
                               NULL if t == T - 1 else Z + (t + 1) * K + D, T * K, N, H)


def lstm_forward(cnp.ndarray gates, cnp.ndarray z, cnp.ndarray b, Wh, cnp.ndarray c,
                 cnp.ndarray tanh_c, cnp.ndarray h, cnp.ndarray ah):
    """The LSTM time loop with a zero initial cell state, into preallocated buffers.

    gates (N, T, 4H): in x_t @ Wx for every t (one GEMM done by the caller), out the
    gate activations; z (N, T, D+H+1): [x_t, h_{t-1}, 1] with h_{-1} = h0 filled in,
    the later h_{t-1} are written here; b (4H,); Wh (H, 4H); c, tanh_c, h (N, T, H)
    written; ah (N, 4H) scratch for prev_h @ Wh.
    """
    if cnp.PyArray_TYPE(gates) == cnp.NPY_FLOAT32:
        _lstm_forward(<float*>NULL, gates, z, b, Wh, c, tanh_c, h, ah)
    else:
        _lstm_forward(<double*>NULL, gates, z, b, Wh, c, tanh_c, h, ah)


cdef _lstm_backward(real* kind, cnp.ndarray dh, cnp.ndarray gates, cnp.ndarray c,
                    cnp.ndarray tanh_c, object Wh, cnp.ndarray da, cnp.ndarray dprev_hT,
                    cnp.ndarray dprev_c, cnp.ndarray zeros):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = dh.shape[0], T = dh.shape[1], H = dh.shape[2]
    cdef Py_ssize_t t
    _check(dh.reshape(N * T, H), "dh", tn, N * T, H)
    _check(gates.reshape(N * T, 4 * H), "gates", tn, N * T, 4 * H)
    _check(c.reshape(N * T, H), "c", tn, N * T, H)
    _check(tanh_c.reshape(N * T, H), "tanh_c", tn, N * T, H)
    _check(da.reshape(N * T, 4 * H), "da", tn, N * T, 4 * H)
    _check(dprev_hT, "dprev_hT", tn, H, N)
    _check(dprev_c, "dprev_c", tn, N, H)
    _check(zeros, "zeros", tn, N, H)
    if gates.shape[0] != N or gates.shape[1] != T or da.shape[0] != N or da.shape[1] != T:
        raise ValueError("_cython_kernels: lstm_backward buffers disagree on N, T")
    cdef real* G = <real*>_data(gates)
    cdef real* C = <real*>_data(c)
    cdef real* TC = <real*>_data(tanh_c)
    cdef real* DH = <real*>_data(dh)
    cdef real* DA = <real*>_data(da)
    cdef real* dpT = <real*>_data(dprev_hT)
    cdef real* dpc = <real*>_data(dprev_c)
    cdef real* Z0 = <real*>_data(zeros)
    memset(dpT, 0, H * N * sizeof(real))
    memset(dpc, 0, H * N * sizeof(real))
    for t in range(T - 1, -1, -1):
        with nogil:
            # dprev_h is kept transposed, (H, N): see lstm_backward's docstring.
            _lstm_backward_rows(G + t * 4 * H, T * 4 * H,
                                Z0 if t == 0 else C + (t - 1) * H, H if t == 0 else T * H,
                                TC + t * H, T * H, dpT, 1, N, DH + t * H, T * H,
                                dpc, H, DA + t * 4 * H, T * 4 * H, dpc, H, N, H)
        _mm(Wh, da[:, t, :].T, dprev_hT)


def lstm_backward(cnp.ndarray dh, cnp.ndarray gates, cnp.ndarray c, cnp.ndarray tanh_c, Wh,
                  cnp.ndarray da, cnp.ndarray dprev_hT, cnp.ndarray dprev_c, cnp.ndarray zeros):
    """The LSTM backward time loop into preallocated buffers.

    dh (N, T, H) upstream; gates (N, T, 4H), c, tanh_c (N, T, H) from lstm_forward;
    Wh (H, 4H); da (N, T, 4H) written; dprev_hT (H, N) out: the gradient of h0,
    transposed, because OpenBLAS computes Wh @ da_t.T ~30% faster than
    da_t @ Wh.T at H = 2048; dprev_c (N, H) scratch; zeros (N, H) the initial cell state.
    """
    if cnp.PyArray_TYPE(dh) == cnp.NPY_FLOAT32:
        _lstm_backward(<float*>NULL, dh, gates, c, tanh_c, Wh, da, dprev_hT, dprev_c, zeros)
    else:
        _lstm_backward(<double*>NULL, dh, gates, c, tanh_c, Wh, da, dprev_hT, dprev_c, zeros)


# =========================================================================== RNN

cdef inline void _rnn_forward_row(const real* a,     # (H,) x@Wx
                                  const real* ah,    # (H,) prev_h@Wh
                                  const real* b,     # (H,)
                                  real* next_h,      # (H,) out
                                  real* h_copy,      # (H,) second copy, or NULL
                                  Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(H):
        next_h[j] = _tanh(a[j] + ah[j] + b[j])
    if h_copy != NULL:
        memcpy(h_copy, next_h, H * sizeof(real))


cdef inline void _rnn_backward_row(const real* dnext_h,  # (H,)
                                   const real* dh_add,   # (H,) added to dnext_h, or NULL
                                   const real* next_h,   # (H,)
                                   real* da,             # (H,) out
                                   Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t j
    if dh_add != NULL:
        for j in range(H):
            da[j] = (dh_add[j] + dnext_h[j]) * (1 - next_h[j] * next_h[j])
    else:
        for j in range(H):
            da[j] = dnext_h[j] * (1 - next_h[j] * next_h[j])


cdef void _rnn_forward_rows(const real* a, Py_ssize_t a_rs, const real* ah, const real* b,
                            real* next_h, Py_ssize_t nh_rs, real* h_copy, Py_ssize_t hc_rs,
                            Py_ssize_t N, Py_ssize_t H) noexcept nogil:
    """_rnn_forward_row for every row; ah is (N, H) contiguous."""
    cdef Py_ssize_t n
    cdef int nt = _threads_for(N * H)
    if nt == 1:
        for n in range(N):
            _rnn_forward_row(a + n * a_rs, ah + n * H, b, next_h + n * nh_rs,
                             NULL if h_copy == NULL else h_copy + n * hc_rs, H)
    else:
        for n in prange(N, num_threads=nt, schedule="static"):
            _rnn_forward_row(a + n * a_rs, ah + n * H, b, next_h + n * nh_rs,
                             NULL if h_copy == NULL else h_copy + n * hc_rs, H)


cdef void _rnn_backward_rows(const real* dnext_h, real* dh_add, Py_ssize_t dha_rs,
                             const real* next_h, Py_ssize_t nh_rs, real* da, Py_ssize_t da_rs,
                             Py_ssize_t N, Py_ssize_t H) noexcept nogil:
    """_rnn_backward_row for every row; dnext_h is (N, H) contiguous."""
    cdef Py_ssize_t n
    cdef int nt = _threads_for(N * H)
    if nt == 1:
        for n in range(N):
            _rnn_backward_row(dnext_h + n * H, NULL if dh_add == NULL else dh_add + n * dha_rs,
                              next_h + n * nh_rs, da + n * da_rs, H)
    else:
        for n in prange(N, num_threads=nt, schedule="static"):
            _rnn_backward_row(dnext_h + n * H, NULL if dh_add == NULL else dh_add + n * dha_rs,
                              next_h + n * nh_rs, da + n * da_rs, H)


cdef _rnn_cell_forward(real* kind, cnp.ndarray a, cnp.ndarray ah, cnp.ndarray b, cnp.ndarray next_h):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = next_h.shape[0], H = next_h.shape[1]
    _check(a, "a", tn, N, H)
    _check(ah, "ah", tn, N, H)
    _check(b, "b", tn, -1, H)
    _check(next_h, "next_h", tn, N, H)
    cdef real* pa = <real*>_data(a)
    cdef real* pah = <real*>_data(ah)
    cdef real* pb = <real*>_data(b)
    cdef real* pnh = <real*>_data(next_h)
    with nogil:
        _rnn_forward_rows(pa, H, pah, pb, pnh, H, NULL, 0, N, H)


def rnn_cell_forward(cnp.ndarray a, cnp.ndarray ah, cnp.ndarray b, cnp.ndarray next_h):
    """next_h = tanh(a + ah + b), all (N, H) but b (H,)."""
    if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32:
        _rnn_cell_forward(<float*>NULL, a, ah, b, next_h)
    else:
        _rnn_cell_forward(<double*>NULL, a, ah, b, next_h)


cdef _rnn_cell_backward(real* kind, cnp.ndarray dnext_h, cnp.ndarray next_h, cnp.ndarray da):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = next_h.shape[0], H = next_h.shape[1]
    _check(dnext_h, "dnext_h", tn, N, H)
    _check(next_h, "next_h", tn, N, H)
    _check(da, "da", tn, N, H)
    cdef real* pdh = <real*>_data(dnext_h)
    cdef real* pnh = <real*>_data(next_h)
    cdef real* pda = <real*>_data(da)
    with nogil:
        _rnn_backward_rows(pdh, NULL, 0, pnh, H, pda, H, N, H)


def rnn_cell_backward(cnp.ndarray dnext_h, cnp.ndarray next_h, cnp.ndarray da):
    """da = dnext_h * (1 - next_h**2), all (N, H)."""
    if cnp.PyArray_TYPE(next_h) == cnp.NPY_FLOAT32:
        _rnn_cell_backward(<float*>NULL, dnext_h, next_h, da)
    else:
        _rnn_cell_backward(<double*>NULL, dnext_h, next_h, da)


cdef _rnn_forward(real* kind, cnp.ndarray xw, cnp.ndarray z, cnp.ndarray b, object Wh,
                  cnp.ndarray h, cnp.ndarray h_last, cnp.ndarray ah):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = h.shape[0], T = h.shape[1], H = h.shape[2]
    cdef Py_ssize_t K = z.shape[2], D = K - H - 1
    cdef Py_ssize_t t
    _check(xw.reshape(N * T, H), "xw", tn, N * T, H)
    _check(z.reshape(N * T, K), "z", tn, N * T, K)
    _check(h.reshape(N * T, H), "h", tn, N * T, H)
    _check(h_last, "h_last", tn, N, H)
    _check(ah, "ah", tn, N, H)
    _check(b, "b", tn, -1, H)
    if xw.shape[0] != N or xw.shape[1] != T or z.shape[0] != N or z.shape[1] != T or D < 0:
        raise ValueError("_cython_kernels: rnn_forward buffers disagree on N, T")
    cdef real* XW = <real*>_data(xw)
    cdef real* Z = <real*>_data(z)
    cdef real* Hs = <real*>_data(h)
    cdef real* AH = <real*>_data(ah)
    cdef real* B = <real*>_data(b)
    cdef real* HL = <real*>_data(h_last)
    for t in range(T):
        _mm(z[:, t, D:D + H], Wh, ah)
        with nogil:
            _rnn_forward_rows(XW + t * H, T * H, AH, B, Hs + t * H, T * H,
                              HL if t == T - 1 else Z + (t + 1) * K + D,
                              H if t == T - 1 else T * K, N, H)


def rnn_forward(cnp.ndarray xw, cnp.ndarray z, cnp.ndarray b, Wh, cnp.ndarray h,
                cnp.ndarray h_last, cnp.ndarray ah):
    """The vanilla-RNN time loop into preallocated buffers.

    xw (N, T, H): x_t @ Wx for every t (one GEMM done by the caller); z (N, T, D+H+1):
    [x_t, h_{t-1}, 1] with h0 filled in, the later h_{t-1} written here; b (H,);
    Wh (H, H); h (N, T, H) written (the output); h_last (N, H) a private copy of
    the last state; ah (N, H) scratch.
    """
    if cnp.PyArray_TYPE(xw) == cnp.NPY_FLOAT32:
        _rnn_forward(<float*>NULL, xw, z, b, Wh, h, h_last, ah)
    else:
        _rnn_forward(<double*>NULL, xw, z, b, Wh, h, h_last, ah)


cdef _rnn_backward(real* kind, cnp.ndarray dh, cnp.ndarray z, cnp.ndarray h_last, object Wh,
                   cnp.ndarray da, cnp.ndarray dprev_h):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t N = dh.shape[0], T = dh.shape[1], H = dh.shape[2]
    cdef Py_ssize_t K = z.shape[2], D = K - H - 1
    cdef Py_ssize_t t
    _check(dh.reshape(N * T, H), "dh", tn, N * T, H)
    _check(z.reshape(N * T, K), "z", tn, N * T, K)
    _check(da.reshape(N * T, H), "da", tn, N * T, H)
    _check(h_last, "h_last", tn, N, H)
    _check(dprev_h, "dprev_h", tn, N, H)
    if z.shape[0] != N or z.shape[1] != T or da.shape[0] != N or da.shape[1] != T or D < 0:
        raise ValueError("_cython_kernels: rnn_backward buffers disagree on N, T")
    cdef real* Z = <real*>_data(z)
    cdef real* DH = <real*>_data(dh)
    cdef real* DA = <real*>_data(da)
    cdef real* dp = <real*>_data(dprev_h)
    cdef real* HL = <real*>_data(h_last)
    memset(dp, 0, N * H * sizeof(real))
    for t in range(T - 1, -1, -1):
        with nogil:
            # h_t lives in z's slot t+1 (the input of step t+1), the last one in h_last.
            _rnn_backward_rows(dp, DH + t * H, T * H,
                               HL if t == T - 1 else Z + (t + 1) * K + D,
                               H if t == T - 1 else T * K, DA + t * H, T * H, N, H)
        _mm(da[:, t, :], Wh.T, dprev_h)


def rnn_backward(cnp.ndarray dh, cnp.ndarray z, cnp.ndarray h_last, Wh, cnp.ndarray da,
                 cnp.ndarray dprev_h):
    """The vanilla-RNN backward time loop: dh (N, T, H), z and h_last from rnn_forward,
    Wh (H, H) -> da (N, T, H) and dprev_h (N, H, the gradient of h0) written."""
    if cnp.PyArray_TYPE(dh) == cnp.NPY_FLOAT32:
        _rnn_backward(<float*>NULL, dh, z, h_last, Wh, da, dprev_h)
    else:
        _rnn_backward(<double*>NULL, dh, z, h_last, Wh, da, dprev_h)


# ===================================================================== embedding

cdef void _embedding_columns(const cnp.npy_intp* idx, const real* dout, real* dW,
                             Py_ssize_t R, Py_ssize_t D, Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """dW[idx[r], c0:c1] += dout[r, c0:c1] for every r, in order (like np.add.at)."""
    cdef Py_ssize_t r, j
    cdef real* row
    for r in range(R):
        row = dW + idx[r] * D
        for j in range(c0, c1):
            row[j] = row[j] + dout[r * D + j]


cdef _embedding_backward(real* kind, cnp.ndarray idx, cnp.ndarray dout, cnp.ndarray dW):
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t R = dout.shape[0], D = dout.shape[1], V = dW.shape[0]
    cdef Py_ssize_t blk, nblocks, width = 64, k
    _check(dout, "dout", tn, R, D)
    _check(dW, "dW", tn, V, D)
    if cnp.PyArray_TYPE(idx) != cnp.NPY_INTP or idx.shape[0] != R or not cnp.PyArray_IS_C_CONTIGUOUS(idx) \
            or idx.ndim != 1:
        raise ValueError(f"_cython_kernels: idx must be a contiguous intp array of length {R}")
    if R and (idx.min() < 0 or idx.max() >= V):
        raise ValueError(f"_cython_kernels: idx must lie in [0, {V})")
    cdef const cnp.npy_intp* ix = <cnp.npy_intp*>_data(idx)
    cdef real* g = <real*>_data(dout)
    cdef real* w = <real*>_data(dW)
    cdef int nt = _threads_for(R * D)
    nblocks = (D + width - 1) // width
    with nogil:
        if nt == 1 or nblocks == 1:
            _embedding_columns(ix, g, w, R, D, 0, D)
        else:
            # Each thread owns whole column blocks of dW: no two threads touch one element.
            for blk in prange(nblocks, num_threads=nt, schedule="static"):
                _embedding_columns(ix, g, w, R, D, blk * width, min(D, (blk + 1) * width))


def embedding_backward(cnp.ndarray idx, cnp.ndarray dout, cnp.ndarray dW):
    """Scatter-add: dW[idx[r]] += dout[r]; idx intp (R,), dout (R, D), dW (V, D) zeroed by the caller."""
    if cnp.PyArray_TYPE(dout) == cnp.NPY_FLOAT32:
        _embedding_backward(<float*>NULL, idx, dout, dW)
    else:
        _embedding_backward(<double*>NULL, idx, dout, dW)


# ======================================================================= softmax

cdef inline double _softmax_xent_row(const real* x,   # (V,) scores
                                     cnp.npy_intp y,  # target
                                     real weight,     # mask value of this row
                                     real scale,      # multiplies the gradient
                                     real* dx,        # (V,) out, may be x itself
                                     Py_ssize_t V) noexcept nogil:
    """One fused pass over a row: max, exp, log-sum-exp, loss, gradient.
    Returns weight * (log-sum-exp - x[y]), the row's loss."""
    cdef Py_ssize_t j, k, V8 = V - V % 8
    cdef real lane_max[8]
    cdef real lane_sum[8]      # positive terms, <= 1 each: no cancellation to fear
    cdef real m, xy, s_inv, v
    cdef double s
    if weight == 0:
        memset(dx, 0, V * sizeof(real))
        return 0.0
    # Eight independent lanes: gcc turns each inner k-loop into one SIMD instruction
    # (the max only when x is read once into v: 7x faster than re-reading it).
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
    s_inv = <real>(weight * scale / s)
    for j in range(V):
        dx[j] = dx[j] * s_inv
    dx[y] -= weight * scale
    return weight * (log(s) - xy)


cdef double _softmax_xent(real* kind, cnp.ndarray x, cnp.ndarray y, object weight, cnp.ndarray dx,
                          cnp.ndarray loss, double scale) except? -1:
    cdef int tn = _typenum(kind)
    cdef Py_ssize_t R = x.shape[0], V = x.shape[1], r
    _check(x, "x", tn, R, V)
    _check(dx, "dx", tn, R, V)
    _check(loss, "loss", cnp.NPY_FLOAT64, -1, R)
    if cnp.PyArray_TYPE(y) != cnp.NPY_INTP or y.shape[0] != R or not cnp.PyArray_IS_C_CONTIGUOUS(y) \
            or y.ndim != 1:
        raise ValueError(f"_cython_kernels: y must be a contiguous intp array of length {R}")
    if R and (y.min() < 0 or y.max() >= V):
        raise ValueError(f"_cython_kernels: y must lie in [0, {V})")
    if weight is not None:
        _check(weight, "weight", tn, -1, R)
    cdef real* xs = <real*>_data(x)
    cdef real* out = <real*>_data(dx)
    cdef real* w = <real*>_data(weight)
    cdef double* lr = <double*>_data(loss)
    cdef const cnp.npy_intp* ys = <cnp.npy_intp*>_data(y)
    cdef int nt = _threads_for(R * V)
    with nogil:
        if nt == 1:
            for r in range(R):
                lr[r] = _softmax_xent_row(xs + r * V, ys[r], 1 if w == NULL else w[r],
                                          <real>scale, out + r * V, V)
        else:
            # Per-row losses land in their own slot; they are summed after the loop.
            for r in prange(R, num_threads=nt, schedule="static"):
                lr[r] = _softmax_xent_row(xs + r * V, ys[r], 1 if w == NULL else w[r],
                                          <real>scale, out + r * V, V)
    return 0


def softmax_xent_rows(cnp.ndarray x, cnp.ndarray y, weight, cnp.ndarray dx, cnp.ndarray loss,
                      double scale):
    """Row-wise weighted softmax cross-entropy.

    x (R, V) scores; y intp (R,) targets; weight (R,) or None (all ones);
    dx (R, V) out (may be x): scale * weight * (softmax(x) - onehot(y));
    loss float64 (R,) out: weight * (logsumexp(x) - x[y]) per row.
    """
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        _softmax_xent(<float*>NULL, x, y, weight, dx, loss, scale)
    else:
        _softmax_xent(<double*>NULL, x, y, weight, dx, loss, scale)


# ================================================================== elementwise

cdef void _tanh_rows(const real* x, real* out, Py_ssize_t N, Py_ssize_t H) noexcept nogil:
    cdef Py_ssize_t n, j
    cdef int nt = _threads_for(N * H)
    if nt == 1:
        for j in range(N * H):
            out[j] = _tanh(x[j])
    else:
        for n in prange(N, num_threads=nt, schedule="static"):
            for j in range(n * H, (n + 1) * H):
                out[j] = _tanh(x[j])


def tanh_into(cnp.ndarray x, cnp.ndarray out):
    """out = tanh(x), both C-contiguous (N, H) of one float dtype."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1]
    if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32:
        _check(x, "x", cnp.NPY_FLOAT32, N, H)
        _check(out, "out", cnp.NPY_FLOAT32, N, H)
        _tanh_rows(<float*>_data(x), <float*>_data(out), N, H)
    else:
        _check(x, "x", cnp.NPY_FLOAT64, N, H)
        _check(out, "out", cnp.NPY_FLOAT64, N, H)
        _tanh_rows(<double*>_data(x), <double*>_data(out), N, H)


# ========================================================================== Adam

cdef enum:
    ADAM_CHUNK = 2048    # elements per chunk: its scratch (and the chunk) stay in L1


cdef inline real _sqrt(real x) noexcept nogil:
    if real is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef void _adam_chunk(real* w,          # (n,) weights, updated
                      const real* dw,   # (n,) gradient
                      real* m,          # (n,) first moment, updated
                      real* v,          # (n,) second moment, updated
                      real lr, real b1, real c1, real b2, real c2, real eps, real bc1, real bc2,
                      Py_ssize_t n) noexcept nogil:
    """n <= ADAM_CHUNK elements of adam_update, in the reference's order of operations
    (c1 = 1 - beta1, c2 = 1 - beta2, bc1, bc2 the bias corrections). Three loops over a
    chunk that stays in L1: the first and last vectorize; the square roots sit alone
    because libm's errno rule keeps gcc from vectorizing a loop that calls sqrt."""
    cdef real denom[ADAM_CHUNK]
    cdef Py_ssize_t i
    cdef real g
    for i in range(n):
        g = dw[i]
        m[i] = b1 * m[i] + c1 * g
        v[i] = b2 * v[i] + c2 * (g * g)
        denom[i] = v[i] / bc2
    for i in range(n):
        denom[i] = _sqrt(denom[i])
    for i in range(n):
        w[i] = w[i] - lr * (m[i] / bc1) / (denom[i] + eps)


cdef int _check_like(object a, str name, object w, int typenum, bint written) except -1:
    """``a`` must be a C-contiguous array of w's shape and ``typenum`` (writeable if written)."""
    if (not isinstance(a, np.ndarray) or a.shape != w.shape
            or cnp.PyArray_TYPE(<cnp.ndarray>a) != typenum
            or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a)):
        raise ValueError(f"_cython_kernels: {name} must be a C-contiguous {_dtype_name(typenum)} "
                         f"array of shape {w.shape}, got {getattr(a, 'dtype', type(a).__name__)} "
                         f"shape {np.shape(a)}")
    if written and not a.flags.writeable:
        raise ValueError(f"_cython_kernels: {name} is read-only; adam_update writes it")
    return 0


cdef _adam_update(real* kind, object w, object dw, object m, object v, double learning_rate,
                  double beta1, double beta2, double epsilon, double bias1, double bias2):
    cdef int tn = _typenum(kind)
    _check_like(w, "w", w, tn, True)
    _check_like(dw, "dw", w, tn, False)
    _check_like(m, "m", w, tn, True)
    _check_like(v, "v", w, tn, True)
    cdef Py_ssize_t n = w.size, k
    cdef Py_ssize_t chunks = (n + ADAM_CHUNK - 1) // ADAM_CHUNK
    cdef real* pw = <real*>_data(w)
    cdef real* pdw = <real*>_data(dw)
    cdef real* pm = <real*>_data(m)
    cdef real* pv = <real*>_data(v)
    # The float64 scalars cast once to the weights' type, as NumPy does with a Python float.
    cdef real lr = <real>learning_rate, eps = <real>epsilon
    cdef real b1 = <real>beta1, c1 = <real>(1 - beta1), b2 = <real>beta2, c2 = <real>(1 - beta2)
    cdef real bc1 = <real>bias1, bc2 = <real>bias2
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
    if isinstance(w, np.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>w) == cnp.NPY_FLOAT32:
        _adam_update(<float*>NULL, w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2)
    else:
        _adam_update(<double*>NULL, w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2)
