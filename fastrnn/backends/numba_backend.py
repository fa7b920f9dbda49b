"""The "numba" backend: BLAS for the matrix products, one fused Numba pass for the rest.

Same functions, signatures, results and dtypes as ``numpy_backend`` (the
reference). What changes is how the work is laid out:

- each step's elementwise work (LSTM gate nonlinearities + cell update, or the
  RNN tanh) is one parallel pass over the batch (``_numba_kernels``), instead of
  a dozen NumPy temporaries;
- the sequence layers run the time loop shared with the cython backend
  (``_sequence``: time-major buffers, one input projection before the loop, one
  product per weight gradient after it) on these kernels;
- the softmax loss is one pass per row (max, log-sum-exp, loss, gradient).

Caches are private to this backend (``fastrnn.layers`` routes a cache back to
the backend that made it). Inputs arrive validated but possibly non-contiguous
or Fortran-ordered: the layer functions hand kernels C-contiguous arrays only,
which also keeps them at one compiled signature per dtype (the in-place KERNELS
take the engine's arrays as they are; another layout compiles another
signature). Small work runs on serial twins of the kernels (see ``_kernel``).
"""
import functools
import threading

import numba
import numpy as np

from fastrnn import threads
from fastrnn._validate import check_ids
from fastrnn.backends import _numba_kernels as _k
from fastrnn.backends import _sequence
from fastrnn.backends.numpy_backend import (  # noqa: F401  (BLAS-only: nothing to fuse)
    affine_backward,
    affine_forward,
    temporal_affine_backward,
    temporal_affine_forward,
    word_embedding_forward,
)
from fastrnn.gemm import mm as _mm  # a @ b through the default GEMM provider

threads.apply_to_loaded_backends()  # numba is imported now: honour the threads knob

_c = np.ascontiguousarray

# A kernel over fewer elements than this runs on the calling thread: waking the
# thread pool costs more than such work, and on a busy machine a parallel region
# waits for its slowest (possibly descheduled) thread. Medium sizes (N=128,
# H=512: 262k gate values a step) stay serial; the full-scale shape goes parallel.
PARALLEL_MIN_ELEMENTS = 1 << 19


def _kernel(name, elements):
    """The parallel kernel ``name`` for big work, else its serial twin."""
    if elements < PARALLEL_MIN_ELEMENTS:
        return getattr(_k, name + "_serial")
    if not _launch["serialise"]:      # a thread-safe layer (omp, tbb): no lock needed
        return getattr(_k, name)
    return functools.partial(_launch_alone, getattr(_k, name))


# Numba's "workqueue" threading layer (the fallback when neither OpenMP nor TBB is
# usable) aborts the whole process when two Python threads launch parallel kernels
# at once. Until a parallel launch shows that the layer is another one, parallel
# kernels take turns under a lock.
_launch = {"serialise": True}
_launch_lock = threading.Lock()


def _launch_alone(kernel, *args):
    with _launch_lock:
        result = kernel(*args)
    try:
        _launch["serialise"] = numba.threading_layer() == "workqueue"
    except ValueError:   # no parallel kernel ran yet
        pass
    return result


# ------------------------------------------------------------------------ RNN

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H)."""
    next_h = np.empty((x.shape[0], Wx.shape[1]), dtype=x.dtype)
    _kernel("rnn_cell_forward", next_h.size)(_mm(x, Wx), _mm(prev_h, Wh), _c(b), next_h)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """dnext_h (N, H) -> dx, dprev_h, dWx, dWh, db."""
    x, prev_h, Wx, Wh, next_h = cache
    da = np.empty_like(next_h)
    _kernel("rnn_cell_backward", da.size)(_c(dnext_h), next_h, da)
    return _mm(da, Wx.T), _mm(da, Wh.T), _mm(x.T, da), _mm(prev_h.T, da), da.sum(axis=0)


class _Cells:
    """The step kernels that the shared sequence loop (``_sequence``) runs on."""

    @staticmethod
    def rnn_cell_forward(a, ah, b, next_h):
        _kernel("rnn_cell_forward", next_h.size)(a, ah, b, next_h)

    @staticmethod
    def rnn_cell_backward(dnext_h, next_h, da):
        _kernel("rnn_cell_backward", da.size)(dnext_h, next_h, da)

    lstm_gates_forward = staticmethod(lambda *args: lstm_gates_forward(*args))
    lstm_gates_backward = staticmethod(lambda *args: lstm_gates_backward(*args))


def rnn_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H) -> h (N, T, H); the loop of ``_sequence``."""
    return _sequence.rnn_forward(_Cells, x, h0, Wx, Wh, _c(b))


def rnn_backward(dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    return _sequence.rnn_backward(_Cells, dh, cache)


# ------------------------------------------------------------------ embedding

def word_embedding_backward(dout, cache):
    """dout (N, T, D) -> dW (V, D); repeated words accumulate. The ids are the cache's
    own copy (see numpy_backend.word_embedding_forward); the kernel checks them too."""
    x, W_shape = cache
    dW = np.zeros(W_shape, dtype=dout.dtype)
    tokens = x.reshape(-1).astype(np.intp, copy=False)
    _k.embedding_scatter_add(_c(tokens), _c(dout).reshape(-1, W_shape[1]), dW)
    return dW


# ----------------------------------------------------------------------- LSTM

def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> next_h, next_c.

    The cache holds the gate activations (N, 4H) and next_c; the backward
    recomputes tanh(next_c), which is cheaper than storing it.
    """
    gates = _mm(x, Wx)             # becomes the activations in place
    prev_c = _c(prev_c)
    next_c, next_h = np.empty_like(prev_c), np.empty_like(prev_c)
    _kernel("lstm_cell_forward", gates.size)(gates, _mm(prev_h, Wh), _c(b), prev_c, next_c,
                                             next_h)
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, gates, next_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """dnext_h, dnext_c (N, H) -> dx, dprev_h, dprev_c, dWx, dWh, db."""
    x, prev_h, prev_c, Wx, Wh, gates, next_c = cache
    da = np.empty_like(gates)
    dprev_c = np.empty_like(prev_c)
    _kernel("lstm_gates_backward", da.size)(gates, prev_c, next_c, _c(dnext_h), _c(dnext_c),
                                            da, dprev_c)
    return (_mm(da, Wx.T), _mm(da, Wh.T), dprev_c, _mm(x.T, da), _mm(prev_h.T, da),
            da.sum(axis=0))


def lstm_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H); the initial cell state is zero -> h (N, T, H); the loop of
    ``_sequence``."""
    return _sequence.lstm_forward(_Cells, x, h0, Wx, Wh, b)


def lstm_backward(dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    return _sequence.lstm_backward(_Cells, dh, cache)


# -------------------------------------------------------------------- softmax

def temporal_softmax_loss(x, y, mask, verbose=False):
    """Masked softmax cross-entropy over every (n, t), summed and divided by N.

    x (N, T, V), y int (N, T), mask (N, T) -> loss (scalar of x's dtype), dx (N, T, V).
    """
    N, T, V = x.shape
    scores = _c(x).reshape(N * T, V)
    dx = np.empty_like(scores)
    row_loss = np.empty(N * T)
    _kernel("softmax_xent_rows", scores.size)(
        scores, _tokens(y), _c(mask).reshape(N * T).astype(x.dtype), 1.0 / N, dx, row_loss)
    if verbose:
        print("dx_flat: ", dx.shape)
    return x.dtype.type(row_loss.sum() / N), dx.reshape(N, T, V)


def _tokens(y):
    """Integer ids as one flat C-contiguous intp array (one compiled signature)."""
    return _c(y.reshape(-1).astype(np.intp, copy=False))


# ------------------------------------------------------- engine kernels (KERNELS)
# The in-place contracts documented in numpy_backend.

def lstm_gates_forward(a, prev_c, next_c, next_h, addend=None, h_op=None):
    """a (n, 4H) pre-activations (+ addend (n, 4H) if given) -> gate activations in place;
    next_c, next_h (n, H) written, and h_op (next_h's bf16 operand) in the same pass."""
    _check_operand("h_op", h_op, next_h)
    if addend is None:
        _kernel("lstm_gates_forward", a.size)(a, prev_c, next_c, next_h, h_op)
    else:   # the sum happens inside the kernel's pass (a zero bias costs nothing)
        _kernel("lstm_cell_forward", a.size)(a, addend, np.zeros(a.shape[1], a.dtype), prev_c,
                                             next_c, next_h, h_op)


def lstm_gates_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op=None):
    """-> da (n, 4H) and dprev_c (n, H), written in place, and da_op (da's bf16 operand)."""
    _check_operand("da_op", da_op, da)
    _kernel("lstm_gates_backward", da.size)(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c,
                                            da_op)


def _check_operand(name, op, of):
    """A bf16 operand buffer must be uint16 or float32, of a float32 array (the kernels
    compile the conversion for those two only)."""
    if op is not None and (of.dtype != np.float32 or op.dtype not in (np.uint16, np.float32)):
        raise TypeError(f"numba backend: {name} must be uint16 or float32 for float32 data, "
                        f"got {op.dtype} for {of.dtype}")


def softmax_cross_entropy_rows(scores, y, scale):
    """scores (R, V) -> scale * (softmax - onehot(y)) in place; returns the summed loss."""
    R = scores.shape[0]
    check_ids("softmax_cross_entropy_rows", "y", y, scores.shape[1])  # the kernel rechecks
    row_loss = np.empty(R)
    _kernel("softmax_xent_rows", scores.size)(
        scores, _tokens(y), np.ones(R, dtype=scores.dtype), float(scale), scores, row_loss)
    return float(row_loss.sum())


# ------------------------------------------------------ optimizer kernel (adam_update)

def adam_update(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """One Adam step in place; see numpy_backend.adam_update. Arrays of any shape:
    C-contiguous ones run as one flat pass (one compiled signature per dtype), other
    layouts on the NumPy kernel."""
    arrays = (w, dw, m, v)
    if not all(a.flags.c_contiguous for a in arrays):
        from fastrnn.backends import numpy_backend
        return numpy_backend.adam_update(*arrays, learning_rate, beta1, beta2, epsilon,
                                         bias1, bias2)
    if w.size:
        _kernel("adam_update", w.size)(*(a.reshape(-1) for a in arrays), float(learning_rate),
                                       float(beta1), float(beta2), float(epsilon), float(bias1),
                                       float(bias2))
