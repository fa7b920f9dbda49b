"""The "numba" backend: BLAS for the matrix products, one fused Numba pass for the rest.

Same functions, signatures, results and dtypes as ``numpy_backend`` (the
reference). What changes is how the work is laid out:

- each step's elementwise work (LSTM gate nonlinearities + cell update, or the
  RNN tanh) is one parallel pass over the batch (``_numba_kernels``), instead of
  a dozen NumPy temporaries;
- the sequence layers keep time-major buffers ``(T, N, .)``, so that every
  timestep is a contiguous block; the input projection of all timesteps is ONE
  product ``(T*N, D) @ Wx`` before the loop, and the weight gradients are ONE
  product each after the backward loop (``dWx = X^T dA``, ``dWh = H_prev^T dA``)
  instead of T small ones;
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


def rnn_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H) -> h (N, T, H)."""
    N, T, D = x.shape
    H = h0.shape[1]
    xs = _c(x.transpose(1, 0, 2))                       # (T, N, D)
    xw = _mm(xs.reshape(T * N, D), Wx).reshape(T, N, H)   # every step's x @ Wx at once
    hs = np.empty((T + 1, N, H), dtype=h0.dtype)        # hs[t] is the state entering step t
    hs[0] = h0
    Wh, b = _c(Wh), _c(b)
    hw = np.empty((N, H), dtype=h0.dtype)
    cell = _kernel("rnn_cell_forward", hw.size)
    for t in range(T):
        _mm(hs[t], Wh, hw)
        cell(xw[t], hw, b, hs[t + 1])
    return _c(hs[1:].transpose(1, 0, 2)), (xs, hs, Wx, Wh)


def rnn_backward(dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    xs, hs, Wx, Wh = cache
    T, N, D = xs.shape
    H = hs.shape[2]
    dhs = _c(dh.transpose(1, 0, 2))                     # (T, N, H)
    da = np.empty((T, N, H), dtype=dh.dtype)            # pre-activation gradient of every step
    dnext_h = np.empty((N, H), dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    cell = _kernel("rnn_cell_backward", dnext_h.size)
    for t in reversed(range(T)):
        np.add(dhs[t], dprev_h, out=dnext_h)
        cell(dnext_h, hs[t + 1], da[t])
        _mm(da[t], Wh.T, dprev_h)
    return _weight_grads(xs, hs, da, Wx, dprev_h)


def _weight_grads(xs, hs, da, Wx, dh0):
    """The products left after a backward loop, one GEMM each over all timesteps.

    xs (T, N, D) inputs, hs (T+1, N, H) states, da (T, N, G) pre-activation
    gradients -> dx (N, T, D), dh0, dWx (D, G), dWh (H, G), db (G,).
    """
    T, N, D = xs.shape
    H, G = hs.shape[2], da.shape[2]
    da2 = da.reshape(T * N, G)
    dx = _c(_mm(da2, Wx.T).reshape(T, N, D).transpose(1, 0, 2))
    dWx = _mm(xs.reshape(T * N, D).T, da2)
    dWh = _mm(hs[:-1].reshape(T * N, H).T, da2)
    return dx, dh0, dWx, dWh, da2.sum(axis=0)


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
    """x (N, T, D), h0 (N, H); the initial cell state is zero -> h (N, T, H)."""
    N, T, D = x.shape
    H = h0.shape[1]
    xs = _c(x.transpose(1, 0, 2))                           # (T, N, D)
    gates = _mm(xs.reshape(T * N, D), Wx).reshape(T, N, 4 * H)  # x @ Wx, then activations
    hs = np.empty((T + 1, N, H), dtype=h0.dtype)            # hs[t], cs[t] enter step t
    cs = np.empty((T + 1, N, H), dtype=h0.dtype)
    hs[0] = h0
    cs[0] = 0
    Wh, b = _c(Wh), _c(b)
    hw = np.empty((N, 4 * H), dtype=h0.dtype)
    cell = _kernel("lstm_cell_forward", hw.size)
    for t in range(T):
        _mm(hs[t], Wh, hw)
        cell(gates[t], hw, b, cs[t], cs[t + 1], hs[t + 1])
    return _c(hs[1:].transpose(1, 0, 2)), (xs, hs, cs, gates, Wx, Wh)


def lstm_backward(dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    xs, hs, cs, gates, Wx, Wh = cache
    T, N, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dhs = _c(dh.transpose(1, 0, 2))                         # (T, N, H)
    da = np.empty((T, N, 4 * H), dtype=dh.dtype)
    dnext_h = np.empty((N, H), dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    dnext_c = np.zeros((N, H), dtype=dh.dtype)
    dprev_c = np.empty((N, H), dtype=dh.dtype)
    cell = _kernel("lstm_gates_backward", da[0].size)
    for t in reversed(range(T)):
        np.add(dhs[t], dprev_h, out=dnext_h)
        cell(gates[t], cs[t], cs[t + 1], dnext_h, dnext_c, da[t], dprev_c)
        dnext_c, dprev_c = dprev_c, dnext_c
        _mm(da[t], Wh.T, dprev_h)
    return _weight_grads(xs, hs, da, Wx, dprev_h)


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

def lstm_gates_forward(a, prev_c, next_c, next_h, addend=None):
    """a (n, 4H) pre-activations (+ addend (n, 4H) if given) -> gate activations in place;
    next_c, next_h (n, H) written."""
    if addend is not None:
        np.add(a, addend, out=a)
    _kernel("lstm_gates_forward", a.size)(a, prev_c, next_c, next_h)


def lstm_gates_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c):
    """-> da (n, 4H) and dprev_c (n, H), written in place."""
    _kernel("lstm_gates_backward", da.size)(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c)


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
