"""Reference behaviour of every layer: known values and numeric gradients.

Parametrised over every available backend, so a compiled backend must pass the
same checks as the NumPy reference.
"""
import numpy as np
import pytest

from fastrnn import layers
from fastrnn.gradcheck import eval_numerical_gradient, eval_numerical_gradient_array, rel_error


def lin(lo, hi, *shape):
    return np.linspace(lo, hi, num=int(np.prod(shape))).reshape(*shape)


# -------------------------------------------------------------- known values

def test_rnn_step_forward_known_values(backend):
    N, D, H = 3, 10, 4
    next_h, _ = layers.rnn_step_forward(
        lin(-0.4, 0.7, N, D), lin(-0.2, 0.5, N, H), lin(-0.1, 0.9, D, H),
        lin(-0.3, 0.7, H, H), lin(-0.2, 0.4, H))
    expected = np.asarray([
        [-0.58172089, -0.50182032, -0.41232771, -0.31410098],
        [0.66854692, 0.79562378, 0.87755553, 0.92795967],
        [0.97934501, 0.99144213, 0.99646691, 0.99854353]])
    assert rel_error(expected, next_h) < 1e-8


def test_lstm_step_forward_known_values(backend):
    N, D, H = 3, 4, 5
    next_h, next_c, _ = layers.lstm_step_forward(
        lin(-0.4, 1.2, N, D), lin(-0.3, 0.7, N, H), lin(-0.4, 0.9, N, H),
        lin(-2.1, 1.3, D, 4 * H), lin(-0.7, 2.2, H, 4 * H), lin(0.3, 0.7, 4 * H))
    expected_h = np.asarray([
        [0.24635157, 0.28610883, 0.32240467, 0.35525807, 0.38474904],
        [0.49223563, 0.55611431, 0.61507696, 0.66844003, 0.7159181],
        [0.56735664, 0.66310127, 0.74419266, 0.80889665, 0.858299]])
    expected_c = np.asarray([
        [0.32986176, 0.39145139, 0.451556, 0.51014116, 0.56717407],
        [0.66382255, 0.76674007, 0.87195994, 0.97902709, 1.08751345],
        [0.74192008, 0.90592151, 1.07717006, 1.25120233, 1.42395676]])
    assert rel_error(expected_h, next_h) < 1e-8
    assert rel_error(expected_c, next_c) < 1e-8


@pytest.mark.parametrize("N, T, V, frac, expected", [
    (100, 1, 10, 1.0, 2.3),
    (100, 10, 10, 1.0, 23.0),
    (5000, 10, 10, 0.1, 2.3),
])
def test_temporal_softmax_loss_at_chance(backend, N, T, V, frac, expected):
    rng = np.random.default_rng(0)
    x = 0.001 * rng.standard_normal((N, T, V))
    y = rng.integers(V, size=(N, T))
    mask = rng.random((N, T)) <= frac
    loss, _ = layers.temporal_softmax_loss(x, y, mask)
    assert abs(loss - expected) < 0.1 * expected


# --------------------------------------------------------- numeric gradients

def check_grads(forward, backward, inputs, dout, tol=1e-7):
    """Compare the analytic backward with numeric gradients of every input."""
    out, cache = forward(*inputs)
    grads = backward(dout, cache)
    for k, (arr, grad) in enumerate(zip(inputs, grads)):
        def f(a, k=k):
            args = list(inputs)
            args[k] = a
            return forward(*args)[0]
        num = eval_numerical_gradient_array(f, arr.copy(), dout)
        assert rel_error(num, grad) < tol, f"gradient of input {k}"


def test_affine_gradients(backend, rng):
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal((7, 3)), rng.standard_normal(3)
    check_grads(layers.affine_forward, layers.affine_backward, [x, w, b],
                rng.standard_normal((5, 3)))


def test_rnn_step_gradients(backend, rng):
    N, D, H = 4, 5, 6
    inputs = [rng.standard_normal((N, D)), rng.standard_normal((N, H)),
              rng.standard_normal((D, H)), rng.standard_normal((H, H)), rng.standard_normal(H)]
    check_grads(layers.rnn_step_forward, layers.rnn_step_backward, inputs,
                rng.standard_normal((N, H)))


def test_rnn_sequence_gradients(backend, rng):
    N, T, D, H = 2, 3, 4, 5
    inputs = [rng.standard_normal((N, T, D)), rng.standard_normal((N, H)),
              rng.standard_normal((D, H)), rng.standard_normal((H, H)), rng.standard_normal(H)]
    check_grads(layers.rnn_forward, layers.rnn_backward, inputs,
                rng.standard_normal((N, T, H)))


def test_lstm_step_gradients(backend, rng):
    N, D, H = 4, 5, 6
    x, prev_h, prev_c = (rng.standard_normal((N, D)), rng.standard_normal((N, H)),
                         rng.standard_normal((N, H)))
    Wx, Wh, b = (rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)),
                 rng.standard_normal(4 * H))
    dnext_h, dnext_c = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    inputs = [x, prev_h, prev_c, Wx, Wh, b]
    _, _, cache = layers.lstm_step_forward(*inputs)
    analytic = layers.lstm_step_backward(dnext_h, dnext_c, cache)
    # the step has two outputs: the numeric gradient sums both contributions
    for k, grad in zip(range(6), [analytic[0], analytic[1], analytic[2],
                                  analytic[3], analytic[4], analytic[5]]):
        def fh(a, k=k):
            args = list(inputs)
            args[k] = a
            return layers.lstm_step_forward(*args)[0]

        def fc(a, k=k):
            args = list(inputs)
            args[k] = a
            return layers.lstm_step_forward(*args)[1]
        num = (eval_numerical_gradient_array(fh, inputs[k].copy(), dnext_h)
               + eval_numerical_gradient_array(fc, inputs[k].copy(), dnext_c))
        assert rel_error(num, grad) < 1e-7, f"gradient of input {k}"


def test_lstm_sequence_gradients(backend, rng):
    N, T, D, H = 2, 3, 4, 5
    inputs = [rng.standard_normal((N, T, D)), rng.standard_normal((N, H)),
              rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)),
              rng.standard_normal(4 * H)]
    check_grads(layers.lstm_forward, layers.lstm_backward, inputs,
                rng.standard_normal((N, T, H)))


def test_word_embedding_gradient(backend, rng):
    N, T, V, D = 3, 4, 5, 6
    x = rng.integers(V, size=(N, T))
    x[0, :2] = 1  # a repeated word must accumulate
    W = rng.standard_normal((V, D))
    out, cache = layers.word_embedding_forward(x, W)
    np.testing.assert_array_equal(out, W[x])
    dout = rng.standard_normal((N, T, D))
    dW = layers.word_embedding_backward(dout, cache)
    num = eval_numerical_gradient_array(lambda W: layers.word_embedding_forward(x, W)[0], W, dout)
    assert rel_error(num, dW) < 1e-9


def test_temporal_affine_gradients(backend, rng):
    N, T, D, M = 2, 3, 4, 5
    inputs = [rng.standard_normal((N, T, D)), rng.standard_normal((D, M)), rng.standard_normal(M)]
    check_grads(layers.temporal_affine_forward, layers.temporal_affine_backward, inputs,
                rng.standard_normal((N, T, M)))


def test_temporal_softmax_loss_gradient(backend, rng):
    N, T, V = 7, 8, 9
    x = rng.standard_normal((N, T, V))
    y = rng.integers(V, size=(N, T))
    mask = rng.random((N, T)) > 0.3
    loss, dx = layers.temporal_softmax_loss(x, y, mask)
    num = eval_numerical_gradient(lambda x: layers.temporal_softmax_loss(x, y, mask)[0], x,
                                  verbose=False)
    assert rel_error(num, dx) < 1e-7
    assert np.all(dx[~mask] == 0)


# ------------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_input_dtype(backend, rng, dtype):
    N, T, D, H, V = 3, 4, 5, 6, 7
    f = lambda *s: rng.standard_normal(s).astype(dtype)  # noqa: E731
    h, cache = layers.lstm_forward(f(N, T, D), f(N, H), f(D, 4 * H), f(H, 4 * H), f(4 * H))
    grads = layers.lstm_backward(f(N, T, H), cache)
    h2, cache2 = layers.rnn_forward(f(N, T, D), f(N, H), f(D, H), f(H, H), f(H))
    grads2 = layers.rnn_backward(f(N, T, H), cache2)
    scores, _ = layers.temporal_affine_forward(h, f(H, V), f(V))
    loss, dx = layers.temporal_softmax_loss(scores, rng.integers(V, size=(N, T)),
                                            np.ones((N, T), bool))
    for a in (h, *grads, h2, *grads2, scores, dx):
        assert a.dtype == dtype
    assert np.isfinite(loss)


def test_float32_matches_float64(backend, rng):
    N, T, D, H = 4, 5, 6, 7
    args64 = [rng.standard_normal((N, T, D)), rng.standard_normal((N, H)),
              0.3 * rng.standard_normal((D, 4 * H)), 0.3 * rng.standard_normal((H, 4 * H)),
              rng.standard_normal(4 * H)]
    h64, _ = layers.lstm_forward(*args64)
    h32, _ = layers.lstm_forward(*[a.astype(np.float32) for a in args64])
    assert rel_error(h64, h32) < 1e-4


def test_extreme_preactivations_do_not_overflow(backend):
    N, H = 2, 3
    f32 = np.float32
    x = np.full((N, 1), 1e4, f32)
    Wx = np.tile(np.array([1, -1], f32), 2 * H)[None, :]   # pre-activations of +-1e4
    zeros = np.zeros((N, H), f32)
    with np.errstate(all="raise"):
        h, c, _ = layers.lstm_step_forward(x, zeros, zeros, Wx, np.zeros((H, 4 * H), f32),
                                           np.zeros(4 * H, f32))
    assert np.all(np.isfinite(h)) and np.all(np.isfinite(c))


# ----------------------------------------------------- in-place engine kernels

@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_lstm_gate_kernels_match_the_step_functions(backend, rng, dtype, tol):
    from fastrnn.backends import active
    be = active()
    N, D, H = 5, 3, 7
    x, prev_h, prev_c = (rng.standard_normal((N, D)).astype(dtype),
                         rng.standard_normal((N, H)).astype(dtype),
                         rng.standard_normal((N, H)).astype(dtype))
    Wx, Wh, b = (rng.standard_normal((D, 4 * H)).astype(dtype),
                 rng.standard_normal((H, 4 * H)).astype(dtype),
                 rng.standard_normal(4 * H).astype(dtype))
    next_h, next_c, cache = layers.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    a = x @ Wx + prev_h @ Wh + b
    kc, kh = np.empty_like(prev_c), np.empty_like(prev_h)
    be.lstm_gates_forward(a, prev_c, kc, kh)
    assert rel_error(next_h, kh) < tol and rel_error(next_c, kc) < tol

    dnext_h, dnext_c = rng.standard_normal((N, H)).astype(dtype), rng.standard_normal((N, H)).astype(dtype)
    dx, dprev_h, dprev_c, dWx, dWh, db = layers.lstm_step_backward(dnext_h, dnext_c, cache)
    da, kdprev_c = np.empty_like(a), np.empty_like(prev_c)
    be.lstm_gates_backward(a, prev_c, kc, dnext_h, dnext_c, da, kdprev_c)
    assert rel_error(da.sum(axis=0), db) < tol * 10
    assert rel_error(da @ Wh.T, dprev_h) < tol * 10
    assert rel_error(kdprev_c, dprev_c) < tol


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_softmax_rows_kernel_matches_temporal_softmax_loss(backend, rng, dtype, tol):
    from fastrnn.backends import active
    N, T, V = 4, 3, 11
    x = (3 * rng.standard_normal((N, T, V))).astype(dtype)
    y = rng.integers(V, size=(N, T))
    loss, dx = layers.temporal_softmax_loss(x, y, np.ones((N, T), bool))
    scores = x.reshape(N * T, V).copy()
    kloss = active().softmax_cross_entropy_rows(scores, y.reshape(-1), 1.0 / N)
    assert abs(kloss / N - loss) < tol * abs(loss)
    assert rel_error(scores.reshape(N, T, V), dx) < tol
