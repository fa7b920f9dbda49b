"""The Cython/OpenMP backend: BLAS for the products, one fused pass for the rest.

Every matrix product goes through ``fastrnn.gemm.mm``, the default GEMM
provider (NumPy's OpenBLAS, or oneDNN inside PyTorch for large products: see
``fastrnn.gemm``); the elementwise work around
it runs in ``fastrnn.backends._cython_kernels`` (built from
``kernels/_cython_kernels.pyx``): nonlinearities, cell update and their
gradients fused per row, parallel over the batch with the GIL released.

Layout carries most of the speed:

* A step's inputs are stacked once into ``z = [x, prev_h, 1]`` of shape
  (N, D+H+1). The forward multiplies views of it; the backward gets dWx, dWh
  and db from ONE product ``z.T @ da`` (the column of ones yields db).
* Sequences run the time loop shared with the numba backend (``_sequence``):
  one input projection before the loop, one product per weight gradient after it.

Caches are private to this backend (``fastrnn.layers`` routes a cache back to
the backend that made it). Inputs arrive validated but may be non-contiguous.
"""
import importlib
import os

# Idle OpenMP threads spin by default, stealing the cores from OpenBLAS's threads
# in the step-by-step alternation of kernel and product, which slows a recurrent
# pass down badly when threads are few. Passive waiting fixes it; it must be
# set before libgomp loads, and a value the user chose is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from fastrnn import threads  # noqa: E402
from fastrnn.backends import _cython_kernels, _sequence  # noqa: E402
from fastrnn.gemm import mm as _mm  # noqa: E402


def _kernels():
    """The AVX2+FMA build of the kernels when this CPU runs it, else the portable one."""
    if _cython_kernels.cpu_has_avx2_fma():
        try:
            return importlib.import_module("fastrnn.backends._cython_kernels_avx2")
        except ImportError:      # not built (non-x86 build machine): the portable one
            pass
    return _cython_kernels


_k = _kernels()
KERNELS_BUILD = _k.__name__.rsplit(".", 1)[1]     # which build runs, for benchmarks

# Both builds share the OpenMP runtime, so one thread setting covers them.
set_num_threads = _k.set_num_threads
get_num_threads = _k.get_num_threads
threads.apply_to_loaded_backends()

_c = np.ascontiguousarray


def _stack_inputs(x, prev_h):
    """z = [x, prev_h, 1], shape (N, D+H+1): one buffer for the forward views and
    for the single weight-gradient product of the backward."""
    N, D = x.shape
    z = np.empty((N, D + prev_h.shape[1] + 1), dtype=x.dtype)
    z[:, :D] = x
    z[:, D:-1] = prev_h
    z[:, -1] = 1
    return z


def _split_weight_grads(dW, D, H):
    """dW = z.T @ da, (D+H+1, M) -> dWx (D, M), dWh (H, M), db (M,): contiguous row views."""
    return dW[:D], dW[D:D + H], dW[D + H]


# --------------------------------------------------------------------- affine

def affine_forward(x, w, b):
    """x (N, D), w (D, M), b (M,) -> out (N, M)."""
    out = _mm(x, w)
    out += b                 # in place: no second (N, M) temporary
    return out, (x, w)


def affine_backward(dout, cache):
    """dout (N, M) -> dx (N, D), dw (D, M), db (M,)."""
    x, w = cache
    return _mm(dout, w.T), _mm(x.T, dout), dout.sum(axis=0)


# ------------------------------------------------------------------------ RNN

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H)."""
    D = x.shape[1]
    z = _stack_inputs(x, prev_h)
    next_h = np.empty_like(z[:, D:-1])
    _k.rnn_cell_forward(_mm(z[:, :D], Wx), _mm(z[:, D:-1], Wh), _c(b), next_h)
    return next_h, (z, Wx, Wh, next_h.copy())


def rnn_step_backward(dnext_h, cache):
    """dnext_h (N, H) -> dx, dprev_h, dWx, dWh, db."""
    z, Wx, Wh, next_h = cache
    da = np.empty_like(next_h)
    _k.rnn_cell_backward(_c(dnext_h), next_h, da)
    D, H = Wx.shape
    return (_mm(da, Wx.T), _mm(da, Wh.T)) + _split_weight_grads(_mm(z.T, da), D, H)


class _Cells:
    """The step kernels that the shared sequence loop (``_sequence``) runs on."""

    rnn_cell_forward = staticmethod(lambda a, ah, b, next_h: _k.rnn_cell_forward(a, ah, b, next_h))
    rnn_cell_backward = staticmethod(lambda dnext_h, next_h, da: _k.rnn_cell_backward(dnext_h, next_h, da))
    lstm_gates_forward = staticmethod(lambda *args: lstm_gates_forward(*args))
    lstm_gates_backward = staticmethod(lambda *args: lstm_gates_backward(*args))


def rnn_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H) -> h (N, T, H); the loop of ``_sequence``."""
    return _sequence.rnn_forward(_Cells, x, h0, Wx, Wh, _c(b))


def rnn_backward(dh, cache):
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx, dWh, db."""
    return _sequence.rnn_backward(_Cells, dh, cache)


# ------------------------------------------------------------------ embedding

def word_embedding_backward(dout, cache):
    """dout (N, T, D) -> dW (V, D); repeated words accumulate (race-free column blocks).
    The cache is the reference forward's (it owns a copy of the ids); the kernel
    checks every id against V before it writes."""
    x, W_shape = cache
    dW = np.zeros(W_shape, dtype=dout.dtype)
    _k.embedding_backward(_c(x.reshape(-1), dtype=np.intp), _c(dout).reshape(-1, W_shape[1]), dW)
    return dW


# ----------------------------------------------------------------------- LSTM

def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> next_h, next_c."""
    D = x.shape[1]
    z = _stack_inputs(x, prev_h)
    prev_c = _c(prev_c)
    gates = _mm(z[:, :D], Wx)               # becomes the gate activations in place
    next_h, next_c, tanh_c = (np.empty_like(prev_c) for _ in range(3))
    _k.lstm_cell_forward(gates, _mm(z[:, D:-1], Wh), _c(b), prev_c, next_c, next_h, tanh_c)
    return next_h, next_c, (z, prev_c, Wx, Wh, gates, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """dnext_h, dnext_c (N, H) -> dx, dprev_h, dprev_c, dWx, dWh, db."""
    z, prev_c, Wx, Wh, gates, tanh_c = cache
    da = np.empty_like(gates)
    dprev_c = np.empty_like(prev_c)
    _k.lstm_cell_backward(gates, prev_c, tanh_c, _c(dnext_h), _c(dnext_c), da, dprev_c)
    dx = _mm(da, Wx.T)
    dprev_h = _mm(da, Wh.T)
    return (dx, dprev_h, dprev_c) + _split_weight_grads(_mm(z.T, da), Wx.shape[0], Wh.shape[0])


def lstm_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H); zero initial cell state -> h (N, T, H); the loop of
    ``_sequence``."""
    return _sequence.lstm_forward(_Cells, x, h0, Wx, Wh, _c(b))


def lstm_backward(dh, cache):
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    return _sequence.lstm_backward(_Cells, dh, cache)


# ------------------------------------------------------------ temporal layers

def temporal_affine_forward(x, w, b):
    """x (N, T, D), w (D, M), b (M,) -> out (N, T, M)."""
    N, T, D = x.shape
    out = _mm(x.reshape(N * T, D), w)
    out += b
    return out.reshape(N, T, w.shape[1]), (x, w)


def temporal_affine_backward(dout, cache):
    """dout (N, T, M) -> dx (N, T, D), dw (D, M), db (M,)."""
    x, w = cache
    N, T, D = x.shape
    dout2 = dout.reshape(N * T, w.shape[1])
    return (_mm(dout2, w.T).reshape(N, T, D), _mm(x.reshape(N * T, D).T, dout2),
            dout2.sum(axis=0))


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Masked softmax cross-entropy summed over (n, t), divided by N -> loss, dx (N, T, V).

    One fused pass per row (max, exp, log-sum-exp, loss, gradient), parallel over
    rows; per-row losses go to their own slots and are summed afterwards.
    """
    N, T, V = x.shape
    R = N * T
    dx = np.empty((N, T, V), dtype=x.dtype)
    row_loss = np.empty(R, dtype=np.float64)
    _k.softmax_xent_rows(_c(x).reshape(R, V), _c(y.reshape(R), dtype=np.intp),
                         _c(mask.reshape(R), dtype=x.dtype), dx.reshape(R, V), row_loss, 1.0 / N)
    if verbose:
        print("dx_flat: ", (R, V))
    return x.dtype.type(row_loss.sum() / N), dx


# ------------------------------------------------------- engine kernels (KERNELS)

def _rows_ok(*arrays):
    """True when every array has contiguous rows (what the kernels index directly)."""
    return all(a.ndim == 2 and (a.shape[1] <= 1 or a.strides[1] == a.itemsize) for a in arrays)


def lstm_gates_forward(a, prev_c, next_c, next_h, addend=None, h_op=None):
    """In place: a (n, 4H) pre-activations (+ addend (n, 4H), added inside the same pass)
    -> gate activations; next_c, next_h (n, H) written, and h_op (next_h's bf16 operand)
    in the same pass. Same contract as numpy_backend.lstm_gates_forward."""
    if not (_rows_ok(a, prev_c) and next_c.flags.c_contiguous and next_h.flags.c_contiguous):
        from fastrnn.backends import numpy_backend
        return numpy_backend.lstm_gates_forward(a, prev_c, next_c, next_h, addend, h_op)
    _k.lstm_cell_forward(a, None if addend is None else _c(addend), None, prev_c, next_c,
                         next_h, None, h_op)


def lstm_gates_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op=None):
    """da (n, 4H) and dprev_c (n, H) written in place, and da_op (da's bf16 operand); see
    numpy_backend.lstm_gates_backward."""
    if not all(a.flags.c_contiguous for a in (next_c, dnext_h, dnext_c, da, dprev_c)) \
            or not _rows_ok(gates, prev_c):
        from fastrnn.backends import numpy_backend
        return numpy_backend.lstm_gates_backward(gates, prev_c, next_c, dnext_h, dnext_c, da,
                                                 dprev_c, da_op)
    tanh_c = np.empty_like(next_c)
    _k.tanh_into(next_c, tanh_c)
    _k.lstm_cell_backward(gates, prev_c, tanh_c, dnext_h, dnext_c, da, dprev_c, da_op)


def softmax_cross_entropy_rows(scores, y, scale):
    """scores (R, V) overwritten with scale * (softmax - onehot(y)); returns the summed loss."""
    if not scores.flags.c_contiguous:
        from fastrnn.backends import numpy_backend
        return numpy_backend.softmax_cross_entropy_rows(scores, y, scale)
    row_loss = np.empty(scores.shape[0], dtype=np.float64)
    _k.softmax_xent_rows(scores, _c(y, dtype=np.intp), None, scores, row_loss, float(scale))
    return float(row_loss.sum())


# ------------------------------------------------------ optimizer kernel (adam_update)

def adam_update(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """One Adam step in place; see numpy_backend.adam_update. C-contiguous arrays run
    in the fused kernel, other layouts on the NumPy one."""
    if not all(a.flags.c_contiguous for a in (w, dw, m, v)):
        from fastrnn.backends import numpy_backend
        return numpy_backend.adam_update(w, dw, m, v, learning_rate, beta1, beta2, epsilon,
                                         bias1, bias2)
    _k.adam_update(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2)
