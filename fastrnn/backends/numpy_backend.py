"""The NumPy reference backend: readable, one timestep at a time, the oracle.

Every other backend is tested against these functions. They follow the CS231n
``rnn_layers.py`` contract: a forward returns ``(out, cache)``, the matching
backward takes ``(dout, cache)``. Inputs are assumed valid (``fastrnn.layers``
checks them at the public boundary); dtypes are preserved, so float32 in gives
float32 out.

Shapes: N batch, T time, D input, H hidden, V vocabulary, M output.
"""
import numpy as np

from fastrnn._validate import check_ids
from fastrnn.precision import to_operand


def sigmoid(x):
    """Logistic function, written via tanh so it never overflows for large |x|."""
    return 0.5 * (1 + np.tanh(0.5 * x))


# --------------------------------------------------------------------- affine

def affine_forward(x, w, b):
    """x (N, D), w (D, M), b (M,) -> out (N, M)."""
    out = x @ w + b
    return out, (x, w)


def affine_backward(dout, cache):
    """dout (N, M) -> dx (N, D), dw (D, M), db (M,)."""
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


# ------------------------------------------------------------------------ RNN

def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H)."""
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """dnext_h (N, H) -> dx, dprev_h, dWx, dWh, db."""
    x, prev_h, Wx, Wh, next_h = cache
    da = dnext_h * (1 - next_h * next_h)  # tanh' = 1 - tanh^2
    return da @ Wx.T, da @ Wh.T, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H) -> h (N, T, H)."""
    N, T, _ = x.shape
    h = np.empty((N, T, h0.shape[1]), dtype=h0.dtype)
    caches = []
    prev_h = h0
    for t in range(T):
        prev_h, cache = rnn_step_forward(x[:, t, :], prev_h, Wx, Wh, b)
        h[:, t, :] = prev_h
        caches.append(cache)
    return h, caches


def rnn_backward(dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    x0, h0, Wx, Wh, _ = cache[0]
    N, T, H = dh.shape
    dx = np.empty((N, T, x0.shape[1]), dtype=dh.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(H, dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t, :] + dprev_h, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


# ------------------------------------------------------------------ embedding

def word_embedding_forward(x, W):
    """x int (N, T), W (V, D) -> out (N, T, D), the rows of W picked by x.

    The cache owns a copy of x: the backward scatters with the ids this forward
    saw, even if the caller changes its array in between.
    """
    return W[x], (x.copy(), W.shape)


def word_embedding_backward(dout, cache):
    """dout (N, T, D) -> dW (V, D); repeated words accumulate."""
    x, W_shape = cache
    check_ids("word_embedding_backward", "the cached ids", x, W_shape[0])
    dW = np.zeros(W_shape, dtype=dout.dtype)
    np.add.at(dW, x, dout)
    return dW


# ----------------------------------------------------------------------- LSTM

def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """x (N, D), prev_h, prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,).

    Gates in the order i, f, o, g: i, f, o = sigmoid, g = tanh;
    next_c = f * prev_c + i * g; next_h = o * tanh(next_c).
    """
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i = sigmoid(a[:, 0 * H:1 * H])
    f = sigmoid(a[:, 1 * H:2 * H])
    o = sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:4 * H])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """dnext_h, dnext_c (N, H) -> dx, dprev_h, dprev_c, dWx, dWh, db."""
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    dc = dnext_c + dnext_h * o * (1 - tanh_c * tanh_c)
    di = dc * g
    df = dc * prev_c
    do = dnext_h * tanh_c
    dg = dc * i
    da = np.concatenate([
        di * i * (1 - i),
        df * f * (1 - f),
        do * o * (1 - o),
        dg * (1 - g * g),
    ], axis=1)
    dx = da @ Wx.T
    dprev_h = da @ Wh.T
    dprev_c = dc * f
    return dx, dprev_h, dprev_c, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def lstm_forward(x, h0, Wx, Wh, b):
    """x (N, T, D), h0 (N, H); the initial cell state is zero -> h (N, T, H)."""
    N, T, _ = x.shape
    H = h0.shape[1]
    h = np.empty((N, T, H), dtype=h0.dtype)
    caches = []
    prev_h, prev_c = h0, np.zeros_like(h0)
    for t in range(T):
        prev_h, prev_c, cache = lstm_step_forward(x[:, t, :], prev_h, prev_c, Wx, Wh, b)
        h[:, t, :] = prev_h
        caches.append(cache)
    return h, caches


def lstm_backward(dh, cache):
    """dh (N, T, H) upstream gradient of every hidden state -> dx, dh0, dWx, dWh, db."""
    x0, _, _, Wx, Wh = cache[0][:5]
    N, T, H = dh.shape
    dx = np.empty((N, T, x0.shape[1]), dtype=dh.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(4 * H, dtype=dh.dtype)
    dprev_h = np.zeros((N, H), dtype=dh.dtype)
    dprev_c = np.zeros((N, H), dtype=dh.dtype)
    for t in reversed(range(T)):
        dx[:, t, :], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t, :] + dprev_h, dprev_c, cache[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


# ------------------------------------------------------------ temporal layers

def temporal_affine_forward(x, w, b):
    """x (N, T, D), w (D, M), b (M,) -> out (N, T, M), the same affine map at every step."""
    N, T, D = x.shape
    out = (x.reshape(N * T, D) @ w + b).reshape(N, T, w.shape[1])
    return out, (x, w)


def temporal_affine_backward(dout, cache):
    """dout (N, T, M) -> dx (N, T, D), dw (D, M), db (M,)."""
    x, w = cache
    N, T, D = x.shape
    M = w.shape[1]
    dout2 = dout.reshape(N * T, M)
    dx = (dout2 @ w.T).reshape(N, T, D)
    dw = x.reshape(N * T, D).T @ dout2
    return dx, dw, dout2.sum(axis=0)


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Masked softmax cross-entropy over every (n, t), summed and divided by N.

    x (N, T, V) scores, y int (N, T) targets in [0, V), mask (N, T) true where the
    target counts -> loss (scalar), dx (N, T, V).
    """
    N, T, V = x.shape
    x_flat = x.reshape(N * T, V)
    y_flat = y.reshape(N * T)
    keep = mask.reshape(N * T).astype(bool)

    shifted = x_flat - x_flat.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(N * T)
    # Selected, not multiplied by the mask: scores at masked-out positions (even
    # NaN or inf) never reach the loss or the gradient.
    loss = -np.where(keep, log_probs[rows, y_flat], 0).sum() / N

    dx_flat = np.exp(log_probs)
    dx_flat[rows, y_flat] -= 1
    dx_flat /= N
    dx_flat[~keep] = 0
    if verbose:
        print("dx_flat: ", dx_flat.shape)
    return loss, dx_flat.reshape(N, T, V)


# ------------------------------------------------------- engine kernels (KERNELS)
# In-place building blocks for fastrnn's fused training path. Compiled backends
# override them with one fused pass; these are their readable definitions.

def lstm_gates_forward(a, prev_c, next_c, next_h, addend=None, h_op=None):
    """Finish one LSTM step in place.

    a (n, 4H): on entry the pre-activations x@Wx + prev_h@Wh + b (minus
    ``addend`` when one is given); on exit the gate activations
    [sigmoid(i), sigmoid(f), sigmoid(o), tanh(g)].
    prev_c (n, H) in; next_c, next_h (n, H) written; addend (n, 4H) or None,
    added to a first (the fused path passes the recurrent product here, so it is
    never copied into a). h_op (n, H) or None: receives next_h's bfloat16 product
    operand (``fastrnn.precision.to_operand``: uint16 bits, or rounded float32 — then
    it may be next_h itself); compiled backends write it in the same pass as next_h.
    """
    if addend is not None:
        a += addend
    H = prev_c.shape[1]
    a[:, :3 * H] = sigmoid(a[:, :3 * H])
    a[:, 3 * H:] = np.tanh(a[:, 3 * H:])
    i, f, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
    next_c[...] = f * prev_c + i * g
    next_h[...] = o * np.tanh(next_c)
    if h_op is not None:
        to_operand(next_h, h_op)


def lstm_gates_backward(gates, prev_c, next_c, dnext_h, dnext_c, da, dprev_c, da_op=None):
    """Gradient of one LSTM step's elementwise part.

    gates (n, 4H) activations from lstm_gates_forward; prev_c, next_c (n, H);
    dnext_h, dnext_c (n, H) upstream -> da (n, 4H) gradient of the
    pre-activations and dprev_c (n, H), both written in place; da_op (n, 4H) or
    None: receives da's bfloat16 product operand (as h_op of lstm_gates_forward).
    """
    H = prev_c.shape[1]
    i, f, o, g = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    tanh_c = np.tanh(next_c)
    dc = dnext_c + dnext_h * o * (1 - tanh_c * tanh_c)
    da[:, :H] = dc * g * i * (1 - i)
    da[:, H:2 * H] = dc * prev_c * f * (1 - f)
    da[:, 2 * H:3 * H] = dnext_h * tanh_c * o * (1 - o)
    da[:, 3 * H:] = dc * i * (1 - g * g)
    dprev_c[...] = dc * f
    if da_op is not None:
        to_operand(da, da_op)


def softmax_cross_entropy_rows(scores, y, scale):
    """Row-wise softmax cross-entropy, in place.

    scores (R, V) in, overwritten with scale * (softmax(scores) - onehot(y));
    y int (R,) targets. Returns the loss summed over rows (unscaled), as a float.
    """
    _check_rows("softmax_cross_entropy_rows", "y", y, scores.shape[0])
    check_ids("softmax_cross_entropy_rows", "y", y, scores.shape[1])
    rows = np.arange(scores.shape[0])
    scores -= scores.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(scores).sum(axis=1))
    loss = float((log_z - scores[rows, y]).sum())
    np.exp(scores - log_z[:, None], out=scores)
    scores[rows, y] -= 1
    scores *= scale
    return loss


def scatter_add_rows(tokens, rows, out):
    """Sum rows per token, in place: out[tokens[r]] += rows[r] for every r.

    tokens int (R,) in [0, V); rows (R, G); out (V, G), typically zeroed by the caller.
    Sorting the row ids by token turns the scatter into one contiguous segment
    per distinct token, each one vectorised column sum: far faster than
    ``np.add.at`` on rows, and faster than the compiled backends' column-blocked
    scatter kernels at the engine's shapes (full scale: about 11,600 rows of 8192
    columns), so they inherit this one.
    """
    _check_rows("scatter_add_rows", "tokens", tokens, rows.shape[0])
    check_ids("scatter_add_rows", "tokens", tokens, out.shape[0])
    if rows.ndim != 2 or out.ndim != 2 or rows.shape[1] != out.shape[1]:
        raise ValueError(f"scatter_add_rows: rows (R, G) and out (V, G) must share G, got "
                         f"{rows.shape} and {out.shape}")
    order = np.argsort(tokens, kind="stable")
    sorted_tokens = tokens[order]
    starts = np.flatnonzero(np.r_[True, sorted_tokens[1:] != sorted_tokens[:-1]]) \
        if len(tokens) else np.zeros(0, dtype=np.intp)
    ends = np.r_[starts[1:], len(tokens)]
    for s, e in zip(starts, ends):
        segment = order[s:e]
        out[sorted_tokens[s]] += rows[segment].sum(axis=0) if e - s > 1 else rows[segment[0]]


def _check_rows(fn, name, ids, R):
    """ids must be 1-D with one entry per row (R)."""
    if not isinstance(ids, np.ndarray) or ids.shape != (R,):
        raise ValueError(f"{fn}: {name} must be 1-D with one id per row ({R}), "
                         f"got shape {np.shape(ids)}")


# ------------------------------------------------------ optimizer kernel (adam_update)

ADAM_BLOCK = 1 << 16   # elements per block: the two scratch blocks stay in L2


def adam_update(w, dw, m, v, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """One Adam step in place, with the arithmetic of ``fastrnn.optim.adam``.

    w, dw, m, v: arrays of one shape and float dtype; w (the weights), m and v
    (the moments) are updated, dw (the gradient) is read. The scalars are Python
    floats; bias1 = 1 - beta1**t and bias2 = 1 - beta2**t are the bias corrections
    of this step t. Element by element, in w's dtype and in this order:

        m = beta1 * m + (1 - beta1) * dw
        v = beta2 * v + (1 - beta2) * (dw * dw)
        w = w - learning_rate * (m / bias1) / (sqrt(v / bias2) + epsilon)

    Contiguous arrays are done in blocks, so the scratch space is two small
    buffers instead of a chain of full-size temporaries; other layouts in one go.
    """
    arrays = (w, dw, m, v)
    if all(a.flags.c_contiguous for a in arrays):
        w, dw, m, v = (a.reshape(-1) for a in arrays)
        n = w.size
        scratch = np.empty((2, min(n, ADAM_BLOCK)), dtype=w.dtype)
        for lo in range(0, n, ADAM_BLOCK):
            block = slice(lo, min(lo + ADAM_BLOCK, n))
            size = block.stop - block.start
            _adam_block(w[block], dw[block], m[block], v[block], scratch[0, :size],
                        scratch[1, :size], learning_rate, beta1, beta2, epsilon, bias1, bias2)
    else:
        _adam_block(w, dw, m, v, np.empty_like(w), np.empty_like(w), learning_rate, beta1,
                    beta2, epsilon, bias1, bias2)


def _adam_block(w, dw, m, v, step, denom, learning_rate, beta1, beta2, epsilon, bias1, bias2):
    """adam_update on one block; step and denom are scratch of the block's shape.
    Each line is one rounding of the reference's expression, in the same order."""
    m *= beta1                                     # m = beta1 * m + (1 - beta1) * dw
    m += np.multiply(dw, 1 - beta1, out=step)
    v *= beta2                                     # v = beta2 * v + (1 - beta2) * (dw * dw)
    np.multiply(dw, dw, out=step)
    step *= 1 - beta2
    v += step
    np.divide(m, bias1, out=step)                  # step = learning_rate * m_hat
    step *= learning_rate
    np.divide(v, bias2, out=denom)                 # denom = sqrt(v_hat) + epsilon
    np.sqrt(denom, out=denom)
    denom += epsilon
    step /= denom
    w -= step
