"""The one compiled time loop of the sequence layers (``rnn_*`` / ``lstm_forward/backward``).

The numba and cython backends share these loops and differ only in the fused
step kernels they pass in (``cells``: an object with ``lstm_gates_forward``,
``lstm_gates_backward`` — the engine's in-place kernels, contract in
``numpy_backend`` — and ``rnn_cell_forward(a, ah, b, next_h)``,
``rnn_cell_backward(dnext_h, next_h, da)``). What the loop adds over the
reference's loop of step functions is layout:

- buffers are time-major, ``(T, N, .)``, so every timestep is one contiguous block
  that the kernels take as it is;
- the input projection of all timesteps (plus the bias) is ONE product
  ``(T*N, D) @ Wx`` before the loop; inside it only ``h_{t-1} @ Wh`` remains;
- after the backward loop, ``dx``, ``dWx`` and ``dWh`` are one product each over
  all timesteps, instead of T small ones.

Caches are private to the backend that made them (``fastrnn.layers`` routes a
cache back to it).
"""
import numpy as np

from fastrnn.gemm import mm as _mm  # a @ b through the default GEMM provider

_c = np.ascontiguousarray


def _project(x, W, b=None):
    """x (N, T, D) -> xs (T, N, D) contiguous and xs @ W (+ b), shape (T, N, G)."""
    N, T, D = x.shape
    xs = _c(x.transpose(1, 0, 2))
    xw = _mm(xs.reshape(T * N, D), W)
    if b is not None:
        xw += b
    return xs, xw.reshape(T, N, W.shape[1])


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


def rnn_forward(cells, x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H) -> h (N, T, H), cache."""
    T, N, H = x.shape[1], x.shape[0], h0.shape[1]
    xs, xw = _project(x, Wx)          # b is added in the kernel, with h_{t-1} @ Wh
    hs = np.empty((T + 1, N, H), dtype=h0.dtype)   # hs[t] is the state entering step t
    hs[0] = h0
    Wh, b = _c(Wh), _c(b)
    hw = np.empty((N, H), dtype=h0.dtype)
    for t in range(T):
        _mm(hs[t], Wh, hw)
        cells.rnn_cell_forward(xw[t], hw, b, hs[t + 1])
    return _c(hs[1:].transpose(1, 0, 2)), (xs, hs, Wx, Wh)


def rnn_backward(cells, dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    xs, hs, Wx, Wh = cache
    T, N, H = xs.shape[0], xs.shape[1], hs.shape[2]
    dhs = _c(dh.transpose(1, 0, 2))                # (T, N, H)
    da = np.empty((T, N, H), dtype=dh.dtype)       # pre-activation gradient of every step
    dnext_h = np.empty((N, H), dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        np.add(dhs[t], dprev_h, out=dnext_h)
        cells.rnn_cell_backward(dnext_h, hs[t + 1], da[t])
        _mm(da[t], Wh.T, dprev_h)
    return _weight_grads(xs, hs, da, Wx, dprev_h)


def lstm_forward(cells, x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H); the initial cell state is zero -> h (N, T, H), cache."""
    T, N, H = x.shape[1], x.shape[0], h0.shape[1]
    xs, gates = _project(x, Wx, b)                 # x @ Wx + b, then the activations
    hs = np.empty((T + 1, N, H), dtype=h0.dtype)   # hs[t], cs[t] enter step t
    cs = np.empty((T + 1, N, H), dtype=h0.dtype)
    hs[0] = h0
    cs[0] = 0
    Wh = _c(Wh)
    hw = np.empty((N, 4 * H), dtype=h0.dtype)
    for t in range(T):
        _mm(hs[t], Wh, hw)
        cells.lstm_gates_forward(gates[t], cs[t], cs[t + 1], hs[t + 1], hw)
    return _c(hs[1:].transpose(1, 0, 2)), (xs, hs, cs, gates, Wx, Wh)


def lstm_backward(cells, dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    xs, hs, cs, gates, Wx, Wh = cache
    T, N, H = xs.shape[0], xs.shape[1], hs.shape[2]
    dhs = _c(dh.transpose(1, 0, 2))                # (T, N, H)
    da = np.empty((T, N, 4 * H), dtype=dh.dtype)
    dnext_h = np.empty((N, H), dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    dnext_c = np.zeros((N, H), dtype=dh.dtype)
    dprev_c = np.empty((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        np.add(dhs[t], dprev_h, out=dnext_h)
        cells.lstm_gates_backward(gates[t], cs[t], cs[t + 1], dnext_h, dnext_c, da[t], dprev_c)
        dnext_c, dprev_c = dprev_c, dnext_c
        _mm(da[t], Wh.T, dprev_h)
    return _weight_grads(xs, hs, da, Wx, dprev_h)
