"""Jitted kernels of the "numba" backend: the elementwise work of a layer in one pass.

Matrix products stay in BLAS (``numba_backend`` does them with numpy); every
kernel here is a single ``prange`` pass over the rows of a batch in which each
thread owns whole output rows, so there are no races and no atomics. Kernels
take C-contiguous arrays; ``numba_backend`` makes sure of that.

float32 and float64 share one source. ``_like`` casts a constant to the float
type of an array element (a bare ``0.5`` would silently promote float32 work to
float64), and ``_tanh`` / ``_exp`` pick an implementation per type: libm for
float64, so results match the NumPy reference to ~1e-15; for float32 the
branch-free form of ``fastrnn.backends.fastmath`` (shared with the Cython
kernels), because LLVM cannot vectorise libm calls and these kernels are
dominated by them.

Each parallel kernel ``k`` has a twin ``k_serial`` with the same row functions,
for work too small to be worth waking the thread pool (``numba_backend`` picks).
Compiled lazily per signature and cached on disk (``cache=True``), so only the
dtypes and variants a program uses get compiled, once per install.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from fastrnn import threads
from fastrnn.backends import fastmath as fm

threads.apply_to_loaded_backends()   # numba is imported now: honour the threads knob

# error_model="numpy": a float division by zero gives inf instead of raising, so
# there is no branch in the loops and LLVM can vectorise them (4-15x here).
_PARALLEL = dict(parallel=True, fastmath=False, cache=True, nogil=True, error_model="numpy")
_SERIAL = dict(fastmath=False, cache=True, nogil=True, error_model="numpy")


# ------------------------------------------------------- scalar helpers (inlined)

def _like(value, x):
    """``value`` as the float type of ``x`` (pure-Python stand-in; see the overload)."""
    return type(x)(value)


@overload(_like)
def _like_impl(value, x):
    convert = np.float32 if x.bitwidth == 32 else np.float64

    def impl(value, x):
        return convert(value)
    return impl


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32 as a float32 (builds 2**k for the vectorisable exp)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@intrinsic
def _float32_from_ubits(typingctx, bits):
    """Reinterpret a uint32 as a float32 (a rounded bit pattern back into a value)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@intrinsic
def _bits_of_float32(typingctx, x):
    """The bit pattern of a float32, as a uint32."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


# The one float32 exp/tanh of the compiled backends: algorithm and constants in
# fastrnn.backends.fastmath (the Cython kernels mirror the same table). Constants
# are bound as float32 at compile time, so no float64 arithmetic creeps in.
_EXP_HI, _EXP_LO = np.float32(fm.EXP_HI), np.float32(fm.EXP_LO)
_LOG2E, _ROUND_SHIFT = np.float32(fm.LOG2E), np.float32(fm.ROUND_SHIFT)
_ROUND_BIAS = np.int32(fm.ROUND_BIAS)
_LN2_HI, _LN2_LO = np.float32(fm.LN2_HI), np.float32(fm.LN2_LO)
_P0, _P1, _P2, _P3, _P4, _P5 = (np.float32(c) for c in fm.EXP_P)
_TANH_CUT = np.float32(fm.TANH_CUT)
_Q0, _Q1, _Q2, _Q3, _Q4 = (np.float32(c) for c in fm.TANH_Q)


@njit(**_SERIAL)
def _pow2_float32(k):
    """2**k for int32 -126 <= k <= 127, from its exponent bits."""
    return _float32_from_bits((k + np.int32(127)) << np.int32(23))


@njit(**_SERIAL)
def _exp_float32(x):
    """exp(x) in float32, the algorithm of fastrnn.backends.fastmath."""
    x = _EXP_HI if x > _EXP_HI else x      # comparisons, not min/max: NaN stays NaN
    x = _EXP_LO if x < _EXP_LO else x
    # n in float32 arithmetic: int32 - int32 is int64 in Numba, and int64 -> float32
    # does not vectorise on AVX2.
    nf = np.float32(np.int32(x * _LOG2E + _ROUND_SHIFT)) - np.float32(_ROUND_BIAS)
    n = np.int32(nf)
    r = x - nf * _LN2_HI
    r = r - nf * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    p = p * r * r + r + np.float32(1.0)
    n1 = n >> np.int32(1)
    return p * _pow2_float32(n1) * _pow2_float32(n - n1)


@njit(**_SERIAL)
def _tanh_float32(x):
    """tanh(x) in float32, the algorithm of fastrnn.backends.fastmath."""
    ax = abs(x)
    z = x * x
    small = (((_Q0 * z + _Q1) * z + _Q2) * z + _Q3) * z + _Q4
    small = small * z * x + x
    large = np.float32(1.0) - np.float32(2.0) / (_exp_float32(np.float32(2.0) * ax)
                                                 + np.float32(1.0))
    large = -large if x < 0 else large
    return small if ax < _TANH_CUT else large


@njit(**_SERIAL)
def exp_into(x, out):
    """out = exp(x) with the kernels' own exp, 1-D (tests the approximation)."""
    for j in range(x.shape[0]):
        out[j] = _exp(x[j])


@njit(**_SERIAL)
def tanh_into(x, out):
    """out = tanh(x) with the kernels' own tanh, 1-D (tests the approximation)."""
    for j in range(x.shape[0]):
        out[j] = _tanh(x[j])


def _tanh(x):
    return math.tanh(x)


@overload(_tanh)
def _tanh_impl(x):
    if x.bitwidth == 32:
        return lambda x: _tanh_float32(x)
    return lambda x: math.tanh(x)


def _exp(x):
    return math.exp(x)


@overload(_exp)
def _exp_impl(x):
    if x.bitwidth == 32:
        return lambda x: _exp_float32(x)
    return lambda x: math.exp(x)


@njit(**_SERIAL)
def _sigmoid(x):
    """Logistic via tanh, as in the reference: never overflows."""
    half = _like(0.5, x)
    return half * (_like(1.0, x) + _tanh(half * x))


# bfloat16 operands (precision 'bf16'): a kernel that produces an activation can also
# write its product operand in the same pass, while the row is in cache. Round to
# nearest even, NaN kept quiet, the rule of fastrnn.precision.

_U16, _QUIET, _HIGH = np.uint64(16), np.uint64(0x00400000), np.uint64(0xFFFF0000)
_ABS, _INF, _HALF_ULP, _ONE = (np.uint64(0x7FFFFFFF), np.uint64(0x7F800000), np.uint64(0x7FFF),
                               np.uint64(1))


@njit(**_SERIAL)
def _bf16_rounded_bits(x):
    """float32 x -> the bits of its bfloat16 rounding (low 16 bits zero), as uint64.
    Unsigned throughout: Numba makes a float of mixed signed/unsigned integers."""
    u = np.uint64(_bits_of_float32(x))
    if (u & _ABS) > _INF:
        return (u | _QUIET) & _HIGH
    return (u + _HALF_ULP + ((u >> _U16) & _ONE)) & _HIGH


def _store_bf16(dst, j, x):
    """dst[j] = the bfloat16 operand of float32 x (pure-Python stand-in; see the overload)."""


@overload(_store_bf16)
def _store_bf16_impl(dst, j, x):
    if dst.dtype == types.uint16:       # bit patterns, what bf16 GEMM libraries read
        def impl(dst, j, x):
            dst[j] = np.uint16(_bf16_rounded_bits(x) >> _U16)
        return impl
    if dst.dtype == types.float32:      # the rounded value, for a float32 GEMM
        def impl(dst, j, x):
            dst[j] = _float32_from_ubits(np.uint32(_bf16_rounded_bits(x)))
        return impl
    return None


@njit(**_SERIAL)
def _operand_row(src, dst, r):
    """Row r of dst (uint16 or float32, src's shape) = bfloat16 operand of src's row;
    dst may be src itself."""
    s, d = src[r], dst[r]
    for j in range(s.shape[0]):
        _store_bf16(d, j, s[j])


_BF16_BLOCK = 4096   # elements per parallel work item of a whole-array conversion


@njit(**_PARALLEL)
def bf16_operand_flat(src, dst):
    """float32 src (n,) -> dst (n,) its bfloat16 operand, uint16 or float32 (may be src):
    what ``fastrnn.precision`` converts whole arrays with when there is no Cython build."""
    _check_flat(src, dst)
    n = src.shape[0]
    for k in prange((n + _BF16_BLOCK - 1) // _BF16_BLOCK):
        for j in range(k * _BF16_BLOCK, min((k + 1) * _BF16_BLOCK, n)):
            _store_bf16(dst, j, src[j])


@njit(**_SERIAL)
def bf16_operand_flat_serial(src, dst):
    """bf16_operand_flat on the calling thread."""
    _check_flat(src, dst)
    for j in range(src.shape[0]):
        _store_bf16(dst, j, src[j])


@njit(**_SERIAL)
def _check_flat(src, dst):
    if dst.shape[0] != src.shape[0]:
        raise ValueError("_numba_kernels: dst must have src's length")


# ------------------------------------------------------------- argument guards
# Numba does not check bounds, so every kernel first checks (in a few integer
# comparisons, or one pass over the ids) that no index it will form can leave
# its arrays, and raises ValueError otherwise: whatever it is passed, it never
# reads or writes outside a buffer.

@njit(**_SERIAL)
def _check_gates(a, h, n):
    """a (n, 4H) gate block against h (n, H)."""
    if a.shape[0] != n or h.shape[0] != n or a.shape[1] != 4 * h.shape[1]:
        raise ValueError("_numba_kernels: gate arrays must be (n, 4H) for cell arrays (n, H)")


@njit(**_SERIAL)
def _check_like(a, b):
    """a must have b's 2-D shape."""
    if a.shape[0] != b.shape[0] or a.shape[1] != b.shape[1]:
        raise ValueError("_numba_kernels: arrays of one kernel call must agree in shape")


@njit(**_SERIAL)
def _check_bias(b, width):
    if b.shape[0] != width:
        raise ValueError("_numba_kernels: the bias must have one entry per column")


@njit(**_SERIAL)
def _check_ids(ids, R, high):
    """ids (R,) each in [0, high)."""
    if ids.shape[0] != R:
        raise ValueError("_numba_kernels: there must be one id per row")
    for k in range(R):
        if ids[k] < 0 or ids[k] >= high:
            raise ValueError("_numba_kernels: an id lies outside [0, number of rows of the table)")


# ----------------------------------------------------------------------- LSTM
# The parallel kernels only hand rows to serial row functions. Numba's parfor
# passes assume that distinct array arguments never alias and may reorder reads
# and writes inside a prange body accordingly; a plain function call leaves them
# nothing to reorder, so callers may pass overlapping arrays where the
# reference allows it (e.g. scores updated in place).
#
# Each row is done in a few short loops rather than one: a loop that writes two
# arrays and reads five needs more runtime alias checks than LLVM will emit, and
# then it stays scalar (unvectorised). A row (4H values) stays in cache
# between the loops, so the pass over memory is still one.

@njit(**_SERIAL)
def _check_lstm_forward(a, prev_c, next_c, next_h, h_op):
    _check_gates(a, prev_c, prev_c.shape[0])
    _check_like(next_c, prev_c)
    _check_like(next_h, prev_c)
    if h_op is not None:
        _check_like(h_op, prev_c)


@njit(**_PARALLEL)
def lstm_cell_forward(a, hw, b, prev_c, next_c, next_h, h_op=None):
    """One LSTM step's elementwise part, fused with the sum of its two products.

    a (n, 4H): on entry x @ Wx, on exit the gate activations [i, f, o, g];
    hw (n, 4H) prev_h @ Wh; b (4H,); prev_c (n, H) -> next_c, next_h (n, H);
    h_op (n, H) uint16 or float32, or None: next_h's bfloat16 operand (may be next_h).
    The pre-activation is (x @ Wx + prev_h @ Wh) + b, the reference's order.
    """
    _check_lstm_forward(a, prev_c, next_c, next_h, h_op)
    _check_like(hw, a)
    _check_bias(b, a.shape[1])
    for r in prange(prev_c.shape[0]):
        _lstm_activate_sum_row(a, hw, b, r)
        _lstm_cell_row(a, prev_c, next_c, next_h, r)
        if h_op is not None:
            _operand_row(next_h, h_op, r)


@njit(**_SERIAL)
def lstm_cell_forward_serial(a, hw, b, prev_c, next_c, next_h, h_op=None):
    """lstm_cell_forward on the calling thread (for small batches)."""
    _check_lstm_forward(a, prev_c, next_c, next_h, h_op)
    _check_like(hw, a)
    _check_bias(b, a.shape[1])
    for r in range(prev_c.shape[0]):
        _lstm_activate_sum_row(a, hw, b, r)
        _lstm_cell_row(a, prev_c, next_c, next_h, r)
        if h_op is not None:
            _operand_row(next_h, h_op, r)


@njit(**_PARALLEL)
def lstm_gates_forward(a, prev_c, next_c, next_h, h_op=None):
    """The KERNELS contract (see numpy_backend): a (n, 4H) pre-activations in,
    gate activations out; prev_c (n, H) -> next_c, next_h (n, H) [and h_op]."""
    _check_lstm_forward(a, prev_c, next_c, next_h, h_op)
    for r in prange(prev_c.shape[0]):
        _lstm_activate_row(a, r)
        _lstm_cell_row(a, prev_c, next_c, next_h, r)
        if h_op is not None:
            _operand_row(next_h, h_op, r)


@njit(**_SERIAL)
def lstm_gates_forward_serial(a, prev_c, next_c, next_h, h_op=None):
    """lstm_gates_forward on the calling thread."""
    _check_lstm_forward(a, prev_c, next_c, next_h, h_op)
    for r in range(prev_c.shape[0]):
        _lstm_activate_row(a, r)
        _lstm_cell_row(a, prev_c, next_c, next_h, r)
        if h_op is not None:
            _operand_row(next_h, h_op, r)


@njit(**_SERIAL)
def _lstm_activate_sum_row(a, hw, b, r):
    """Row r: a = [sigmoid, sigmoid, sigmoid, tanh]((a + hw) + b), blockwise."""
    H = a.shape[1] // 4
    for k in range(3 * H):
        a[r, k] = _sigmoid((a[r, k] + hw[r, k]) + b[k])
    for j in range(H):  # not range(3H, 4H): a loop that starts at 0 vectorises
        k = 3 * H + j
        a[r, k] = _tanh((a[r, k] + hw[r, k]) + b[k])


@njit(**_SERIAL)
def _lstm_activate_row(a, r):
    """Row r: a = [sigmoid, sigmoid, sigmoid, tanh](a), blockwise."""
    H = a.shape[1] // 4
    for k in range(3 * H):
        a[r, k] = _sigmoid(a[r, k])
    for j in range(H):
        a[r, 3 * H + j] = _tanh(a[r, 3 * H + j])


@njit(**_SERIAL)
def _lstm_cell_row(gates, prev_c, next_c, next_h, r):
    """Row r: next_c = f * prev_c + i * g, next_h = o * tanh(next_c)."""
    H = prev_c.shape[1]
    for j in range(H):
        c = gates[r, H + j] * prev_c[r, j] + gates[r, j] * gates[r, 3 * H + j]
        next_c[r, j] = c
        next_h[r, j] = gates[r, 2 * H + j] * _tanh(c)


@njit(**_SERIAL)
def _check_lstm_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op):
    _check_gates(gates, prev_c, prev_c.shape[0])
    _check_like(da, gates)
    _check_like(next_c, prev_c)
    _check_like(dnext_h, prev_c)
    _check_like(dnext_c, prev_c)
    _check_like(dprev_c, prev_c)
    if da_op is not None:
        _check_like(da_op, gates)


@njit(**_PARALLEL)
def lstm_gates_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op=None):
    """The KERNELS contract: gates (n, 4H) activations; prev_c, next_c (n, H);
    dnext_h, dnext_c (n, H) upstream -> da (n, 4H) pre-activation gradient,
    dprev_c (n, H) (which may be dnext_c itself); da_op (n, 4H) uint16 or float32, or
    None: da's bfloat16 operand."""
    _check_lstm_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op)
    for r in prange(prev_c.shape[0]):
        _lstm_backward_row(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, r)
        if da_op is not None:
            _operand_row(da, da_op, r)


@njit(**_SERIAL)
def lstm_gates_backward_serial(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c,
                               da_op=None):
    """lstm_gates_backward on the calling thread."""
    _check_lstm_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op)
    for r in range(prev_c.shape[0]):
        _lstm_backward_row(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, r)
        if da_op is not None:
            _operand_row(da, da_op, r)


@njit(**_SERIAL)
def _lstm_backward_row(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, r):
    """Row r of lstm_gates_backward; da's o block and dprev_c double as scratch."""
    H = prev_c.shape[1]
    for j in range(H):   # tanh(next_c), parked in da's o block
        da[r, 2 * H + j] = _tanh(next_c[r, j])
    for j in range(H):   # dc (parked in dprev_c) and the o gradient
        tanh_c = da[r, 2 * H + j]
        o = gates[r, 2 * H + j]
        one = _like(1.0, o)
        dh = dnext_h[r, j]
        dprev_c[r, j] = dnext_c[r, j] + dh * o * (one - tanh_c * tanh_c)
        da[r, 2 * H + j] = dh * tanh_c * o * (one - o)
    for j in range(H):   # the i, f, g gradients, then dc becomes dprev_c
        dc = dprev_c[r, j]
        i = gates[r, j]
        f = gates[r, H + j]
        g = gates[r, 3 * H + j]
        one = _like(1.0, i)
        da[r, j] = dc * g * i * (one - i)
        da[r, H + j] = dc * prev_c[r, j] * f * (one - f)
        da[r, 3 * H + j] = dc * i * (one - g * g)
        dprev_c[r, j] = dc * f


# ------------------------------------------------------------------------ RNN

@njit(**_SERIAL)
def _check_rnn_forward(xw, hw, b, next_h):
    _check_like(xw, next_h)
    _check_like(hw, next_h)
    _check_bias(b, next_h.shape[1])


@njit(**_PARALLEL)
def rnn_cell_forward(xw, hw, b, next_h):
    """xw, hw (n, H) the products x @ Wx, prev_h @ Wh; b (H,) ->
    next_h (n, H) = tanh((x @ Wx + prev_h @ Wh) + b)."""
    _check_rnn_forward(xw, hw, b, next_h)
    for r in prange(next_h.shape[0]):
        _rnn_forward_row(xw, hw, b, next_h, r)


@njit(**_SERIAL)
def rnn_cell_forward_serial(xw, hw, b, next_h):
    """rnn_cell_forward on the calling thread."""
    _check_rnn_forward(xw, hw, b, next_h)
    for r in range(next_h.shape[0]):
        _rnn_forward_row(xw, hw, b, next_h, r)


@njit(**_SERIAL)
def _rnn_forward_row(xw, hw, b, next_h, r):
    for j in range(next_h.shape[1]):
        next_h[r, j] = _tanh((xw[r, j] + hw[r, j]) + b[j])


@njit(**_SERIAL)
def _check_rnn_backward(dnext_h, next_h, da):
    _check_like(dnext_h, next_h)
    _check_like(da, next_h)


@njit(**_PARALLEL)
def rnn_cell_backward(dnext_h, next_h, da):
    """dnext_h, next_h (n, H) -> da (n, H), the gradient through tanh."""
    _check_rnn_backward(dnext_h, next_h, da)
    for r in prange(next_h.shape[0]):
        _rnn_backward_row(dnext_h, next_h, da, r)


@njit(**_SERIAL)
def rnn_cell_backward_serial(dnext_h, next_h, da):
    """rnn_cell_backward on the calling thread."""
    _check_rnn_backward(dnext_h, next_h, da)
    for r in range(next_h.shape[0]):
        _rnn_backward_row(dnext_h, next_h, da, r)


@njit(**_SERIAL)
def _rnn_backward_row(dnext_h, next_h, da, r):
    for j in range(next_h.shape[1]):
        h = next_h[r, j]
        da[r, j] = dnext_h[r, j] * (_like(1.0, h) - h * h)


# ------------------------------------------------------------------ embedding

_COLUMN_BLOCK = 64


@njit(**_PARALLEL)
def embedding_scatter_add(tokens, dout, dW):
    """tokens int (R,), dout (R, D) -> dW (V, D) += dout rows at their tokens.

    Threads own blocks of columns of dW, so repeated tokens never race; within a
    block, rows are added in token order, as np.add.at does.
    """
    if dW.shape[1] != dout.shape[1]:
        raise ValueError("_numba_kernels: dout and dW must have the same number of columns")
    _check_ids(tokens, dout.shape[0], dW.shape[0])
    R, D = dout.shape
    blocks = (D + _COLUMN_BLOCK - 1) // _COLUMN_BLOCK
    for blk in prange(blocks):
        lo = blk * _COLUMN_BLOCK
        width = min(_COLUMN_BLOCK, D - lo)
        for k in range(R):
            row = tokens[k]
            for j in range(width):
                dW[row, lo + j] += dout[k, lo + j]


# -------------------------------------------------------------------- softmax

@njit(**_PARALLEL)
def softmax_xent_rows(scores, y, weight, scale, out, row_loss):
    """Softmax cross-entropy, one fused pass per row.

    scores (R, V); y int (R,) targets; weight (R,) per-row factor (the mask);
    scale a float -> out (R, V) = weight * scale * (softmax(scores) - onehot(y))
    (out may be scores itself), row_loss (R,) float64 = weight * -log p[y].
    Each thread writes its own rows; the caller sums row_loss.
    """
    _check_softmax(scores, y, weight, out, row_loss)
    for r in prange(scores.shape[0]):
        # a serial row function, so that out may be scores (see the LSTM note)
        row_loss[r] = _softmax_xent_row(scores, y[r], weight[r], scale, out, r)


@njit(**_SERIAL)
def softmax_xent_rows_serial(scores, y, weight, scale, out, row_loss):
    """softmax_xent_rows on the calling thread."""
    _check_softmax(scores, y, weight, out, row_loss)
    for r in range(scores.shape[0]):
        row_loss[r] = _softmax_xent_row(scores, y[r], weight[r], scale, out, r)


@njit(**_SERIAL)
def _check_softmax(scores, y, weight, out, row_loss):
    R = scores.shape[0]
    _check_like(out, scores)
    if weight.shape[0] != R or row_loss.shape[0] != R:
        raise ValueError("_numba_kernels: weight and row_loss must have one entry per row")
    if R and scores.shape[1] == 0:
        raise ValueError("_numba_kernels: scores must have at least one column")
    _check_ids(y, R, scores.shape[1])


@njit(**_SERIAL)
def _softmax_xent_row(scores, target, w, scale, out, r):
    """Row r of softmax_xent_rows; returns its loss."""
    V = scores.shape[1]
    if w == 0:
        for j in range(V):
            out[r, j] = 0
        return 0.0
    m = _row_max(scores, r)
    target_score = scores[r, target] - m
    for j in range(V):
        out[r, j] = _exp(scores[r, j] - m)
    total = _row_sum(out, r)
    factor = _like(w * scale / total, m)
    for j in range(V):
        out[r, j] *= factor
    out[r, target] -= _like(w * scale, m)
    return w * (math.log(total) - target_score)


# Row reductions with eight independent accumulators: fastmath=False forbids LLVM
# to reassociate a single running sum, so this is what lets it use SIMD lanes.

@njit(**_SERIAL)
def _row_max(a, r):
    """max of a[r, :] (at least one column)."""
    V = a.shape[1]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = a[r, 0]
    j = 0
    while j + 8 <= V:
        m0 = max(m0, a[r, j])
        m1 = max(m1, a[r, j + 1])
        m2 = max(m2, a[r, j + 2])
        m3 = max(m3, a[r, j + 3])
        m4 = max(m4, a[r, j + 4])
        m5 = max(m5, a[r, j + 5])
        m6 = max(m6, a[r, j + 6])
        m7 = max(m7, a[r, j + 7])
        j += 8
    while j < V:
        m0 = max(m0, a[r, j])
        j += 1
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@njit(**_SERIAL)
def _row_sum(a, r):
    """sum of a[r, :]: eight partial sums in a's precision (float32 lanes are
    twice as fast; each holds ~V/8 positive terms), combined in float64."""
    V = a.shape[1]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = _like(0.0, a[r, 0])
    j = 0
    while j + 8 <= V:
        s0 += a[r, j]
        s1 += a[r, j + 1]
        s2 += a[r, j + 2]
        s3 += a[r, j + 3]
        s4 += a[r, j + 4]
        s5 += a[r, j + 5]
        s6 += a[r, j + 6]
        s7 += a[r, j + 7]
        j += 8
    total = 0.0
    while j < V:
        total += a[r, j]
        j += 1
    return total + (((float(s0) + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))


# ---------------------------------------------------------------------- Adam
# Blocks small enough that w, dw, m, v stay in L1 between three loops that each
# write one array: a single loop writing w, m and v stays scalar (too many runtime
# alias checks for LLVM, as in the LSTM note), these three vectorize.

_ADAM_BLOCK = 2048


@njit(**_SERIAL)
def _check_adam(w, dw, m, v):
    if dw.shape[0] != w.shape[0] or m.shape[0] != w.shape[0] or v.shape[0] != w.shape[0]:
        raise ValueError("_numba_kernels: w, dw, m and v must have one length")


@njit(**_PARALLEL)
def adam_update(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """One Adam step in place (the contract of numpy_backend.adam_update).

    w, dw, m, v (n,) C-contiguous, one float dtype; w, m, v updated. The float64
    scalars are cast to w's dtype, so the arithmetic is the reference's.
    Threads own distinct blocks of elements.
    """
    _check_adam(w, dw, m, v)
    n = w.shape[0]
    for k in prange((n + _ADAM_BLOCK - 1) // _ADAM_BLOCK):
        b = slice(k * _ADAM_BLOCK, min((k + 1) * _ADAM_BLOCK, n))
        _adam_block(w[b], dw[b], m[b], v[b], learning_rate, beta1, beta2, epsilon, bias1, bias2)


@njit(**_SERIAL)
def adam_update_serial(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """adam_update on the calling thread."""
    _check_adam(w, dw, m, v)
    n = w.shape[0]
    for lo in range(0, n, _ADAM_BLOCK):
        b = slice(lo, min(lo + _ADAM_BLOCK, n))
        _adam_block(w[b], dw[b], m[b], v[b], learning_rate, beta1, beta2, epsilon, bias1, bias2)


@njit(**_SERIAL)
def _adam_block(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """adam_update on one block (views of at least one element), in the reference's order.
    Loops start at 0: Numba then knows the index is never negative and LLVM vectorises."""
    x = w[0]
    b1, c1 = _like(beta1, x), _like(1.0 - beta1, x)
    b2, c2 = _like(beta2, x), _like(1.0 - beta2, x)
    lr, eps = _like(learning_rate, x), _like(epsilon, x)
    bc1, bc2 = _like(bias1, x), _like(bias2, x)
    for i in range(w.shape[0]):
        m[i] = b1 * m[i] + c1 * dw[i]
    for i in range(w.shape[0]):
        g = dw[i]
        v[i] = b2 * v[i] + c2 * (g * g)
    for i in range(w.shape[0]):
        w[i] = w[i] - lr * (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps)
