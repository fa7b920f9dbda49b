"""Bad input is rejected at the public boundary with an error that names the argument."""
import numpy as np
import pytest

from fastrnn import layers

N, T, D, H, V = 3, 4, 5, 6, 7


def f64(*shape):
    return np.zeros(shape)


def lstm_args():
    return dict(x=f64(N, T, D), h0=f64(N, H), Wx=f64(D, 4 * H), Wh=f64(H, 4 * H), b=f64(4 * H))


@pytest.mark.parametrize("arg, bad, words", [
    ("x", f64(N, D), ["x", "3-D", "(N, T, D)", "(3, 5)"]),
    ("h0", f64(N + 1, H), ["h0"]),
    ("Wx", f64(D, 3 * H), ["Wx", "(5, 24)", "(5, 18)"]),
    ("Wh", f64(H, H), ["Wh", "(6, 24)", "(6, 6)"]),
    ("b", f64(4 * H + 1), ["b", "(24,)", "(25,)"]),
])
def test_lstm_forward_shape_errors_name_the_argument(backend, arg, bad, words):
    args = lstm_args()
    args[arg] = bad
    with pytest.raises(ValueError) as err:
        layers.lstm_forward(**args)
    for word in words:
        assert word in str(err.value)
    assert "lstm_forward" in str(err.value)


def test_mismatched_dtypes_are_rejected(backend):
    args = lstm_args()
    args["Wh"] = args["Wh"].astype(np.float32)
    with pytest.raises(TypeError, match="Wh is float32 but h0 is float64"):
        layers.lstm_forward(**args)


def test_non_float_dtype_is_rejected(backend):
    with pytest.raises(TypeError, match="x must be float32 or float64, got int64"):
        layers.affine_forward(np.zeros((2, 3), np.int64), f64(3, 4), f64(4))


def test_non_array_is_rejected(backend):
    with pytest.raises(TypeError, match="w must be a numpy.ndarray, got list"):
        layers.affine_forward(f64(2, 3), [[0.0] * 4] * 3, f64(4))


def test_rnn_step_shape_error(backend):
    with pytest.raises(ValueError, match=r"rnn_step_forward: Wh must have shape \(H, H\)"):
        layers.rnn_step_forward(f64(N, D), f64(N, H), f64(D, H), f64(H, H + 1), f64(H))


def test_embedding_token_checks(backend):
    W = f64(V, D)
    with pytest.raises(TypeError, match="x must hold integer token ids, got dtype float64"):
        layers.word_embedding_forward(f64(N, T), W)
    x = np.zeros((N, T), np.int64)
    x[1, 2] = V
    with pytest.raises(ValueError, match=r"x holds token id 7, outside the valid range \[0, 7\)"):
        layers.word_embedding_forward(x, W)
    x[1, 2] = -1
    with pytest.raises(ValueError, match="token id -1"):
        layers.word_embedding_forward(x, W)
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        layers.word_embedding_forward(np.zeros(N, np.int64), W)


def test_softmax_loss_checks(backend):
    x = f64(N, T, V)
    y = np.zeros((N, T), np.int64)
    mask = np.ones((N, T), bool)
    with pytest.raises(ValueError, match=r"mask must have shape \(N, T\) = \(3, 4\).*\(3, 5\)"):
        layers.temporal_softmax_loss(x, y, np.ones((N, T + 1), bool))
    with pytest.raises(ValueError, match=r"y holds token id 7"):
        layers.temporal_softmax_loss(x, y + V, mask)
    with pytest.raises(TypeError, match="y must hold integer token ids"):
        layers.temporal_softmax_loss(x, y.astype(float), mask)
    with pytest.raises(TypeError, match="mask must be boolean"):
        layers.temporal_softmax_loss(x, y, np.full((N, T), "a"))


def test_backward_checks_cache_and_upstream_gradient(backend):
    h, cache = layers.lstm_forward(**lstm_args())
    with pytest.raises(ValueError, match=r"lstm_backward: dh must have the shape of the forward "
                                         r"output \(3, 4, 6\), got \(3, 4, 5\)"):
        layers.lstm_backward(f64(N, T, H - 1), cache)
    with pytest.raises(TypeError, match="dh must be float64 like the forward pass"):
        layers.lstm_backward(h.astype(np.float32), cache)
    with pytest.raises(TypeError, match="rnn_backward: cache must be the cache returned by "
                                        "rnn_forward, got lstm_forward"):
        layers.rnn_backward(h, cache)
    with pytest.raises(TypeError, match="got tuple"):
        layers.lstm_backward(h, (1, 2))
