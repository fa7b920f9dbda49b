"""Degenerate inputs get one documented behaviour, the same on every backend.

- An empty axis anywhere (N = 0, T = 0, D = 0, ...): ValueError at the public
  boundary naming the function, the argument and the axis (``fastrnn._validate``).
- Scores at masked-out positions never reach the softmax loss or its gradient,
  even when they are NaN or inf.
- A mask is boolean or holds only 0 and 1; anything else is a ValueError.
"""
import numpy as np
import pytest

import fastrnn
from fastrnn import layers
from fastrnn.backends import load_backend
from fastrnn.captioning import engine

BACKENDS = fastrnn.available_backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastrnn.use_backend(request.param):
        yield request.param


def _r(*shape):
    return np.random.default_rng(sum(shape)).standard_normal(shape)


def _ids(*shape):
    return np.zeros(shape, dtype=np.int64)


# (call, argument named, empty axis named)
EMPTY = {
    "affine_forward N=0": (lambda: layers.affine_forward(_r(0, 3), _r(3, 4), _r(4)), "x", "N"),
    "affine_forward M=0": (lambda: layers.affine_forward(_r(2, 3), _r(3, 0), _r(0)), "w", "M"),
    "rnn_step_forward N=0": (lambda: layers.rnn_step_forward(_r(0, 3), _r(0, 4), _r(3, 4),
                                                             _r(4, 4), _r(4)), "x", "N"),
    "rnn_forward T=0": (lambda: layers.rnn_forward(_r(2, 0, 3), _r(2, 4), _r(3, 4), _r(4, 4),
                                                   _r(4)), "x", "T"),
    "rnn_forward N=0": (lambda: layers.rnn_forward(_r(0, 2, 3), _r(0, 4), _r(3, 4), _r(4, 4),
                                                   _r(4)), "x", "N"),
    "rnn_forward H=0": (lambda: layers.rnn_forward(_r(2, 2, 3), _r(2, 0), _r(3, 0), _r(0, 0),
                                                   _r(0)), "h0", "H"),
    "lstm_step_forward N=0": (lambda: layers.lstm_step_forward(
        _r(0, 3), _r(0, 4), _r(0, 4), _r(3, 16), _r(4, 16), _r(16)), "prev_h", "N"),
    "lstm_forward T=0": (lambda: layers.lstm_forward(_r(2, 0, 3), _r(2, 4), _r(3, 16),
                                                     _r(4, 16), _r(16)), "x", "T"),
    "lstm_forward N=0": (lambda: layers.lstm_forward(_r(0, 2, 3), _r(0, 4), _r(3, 16),
                                                     _r(4, 16), _r(16)), "h0", "N"),
    "lstm_forward D=0": (lambda: layers.lstm_forward(_r(2, 2, 0), _r(2, 4), _r(0, 16),
                                                     _r(4, 16), _r(16)), "x", "D"),
    "word_embedding_forward T=0": (lambda: layers.word_embedding_forward(_ids(2, 0), _r(5, 3)),
                                   "x", "T"),
    "word_embedding_forward V=0": (lambda: layers.word_embedding_forward(_ids(2, 3), _r(0, 3)),
                                   "W", "V"),
    "temporal_affine_forward T=0": (lambda: layers.temporal_affine_forward(
        _r(2, 0, 3), _r(3, 4), _r(4)), "x", "T"),
    "temporal_softmax_loss N=0": (lambda: layers.temporal_softmax_loss(
        _r(0, 2, 5), _ids(0, 2), np.ones((0, 2), bool)), "x", "N"),
    "temporal_softmax_loss T=0": (lambda: layers.temporal_softmax_loss(
        _r(2, 0, 5), _ids(2, 0), np.ones((2, 0), bool)), "x", "T"),
    "temporal_softmax_loss V=0": (lambda: layers.temporal_softmax_loss(
        _r(2, 3, 0), _ids(2, 3), np.ones((2, 3), bool)), "x", "V"),
}


@pytest.mark.parametrize("case", list(EMPTY))
def test_an_empty_axis_is_refused_with_the_same_error_everywhere(backend, case):
    call, arg, axis = EMPTY[case]
    fn = case.split()[0]
    with pytest.raises(ValueError, match=rf"^{fn}: {arg} has shape \(.*\), an empty {axis} "
                                         rf"axis; every dimension must be at least 1"):
        call()


@pytest.mark.parametrize("kernels", BACKENDS)
def test_engine_refuses_an_empty_batch(kernels):
    from fastrnn.captioning.model import CaptioningRNN
    model = CaptioningRNN({"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}, input_dim=4,
                          wordvec_dim=3, hidden_dim=5, cell_type="lstm", seed=0)
    with pytest.raises(ValueError, match="captioning_loss: features has shape \\(0, 4\\), "
                                         "an empty N axis"):
        engine.captioning_loss(model.params, np.zeros((0, 4), np.float32), _ids(0, 5),
                               null_idx=0, kernels=load_backend(kernels))


def _softmax_case(dtype):
    rng = np.random.default_rng(3)
    N, T, V = 3, 4, 7
    x = rng.standard_normal((N, T, V)).astype(dtype)
    y = rng.integers(0, V, (N, T))
    mask = rng.random((N, T)) < 0.6
    mask[0, 0], mask[1, 1] = False, True
    return x, y, mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf, 1e30])
def test_masked_out_scores_never_reach_loss_or_gradient(backend, dtype, poison):
    x, y, mask = _softmax_case(dtype)
    clean_loss, clean_dx = layers.temporal_softmax_loss(x, y, mask)
    poisoned = x.copy()
    poisoned[~mask] = poison
    poisoned[~mask, 0] = 0   # a row all inf would be no different from a finite row
    with np.errstate(invalid="ignore", over="ignore"):
        loss, dx = layers.temporal_softmax_loss(poisoned, y, mask)
    assert loss == clean_loss and np.isfinite(loss)
    np.testing.assert_array_equal(dx, clean_dx)
    assert not dx[~mask].any()
    with fastrnn.use_backend("numpy"):   # and the same as the reference
        ref_loss, ref_dx = layers.temporal_softmax_loss(x, y, mask)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, ref_loss, rtol=tol)
    np.testing.assert_allclose(dx, ref_dx, rtol=tol, atol=tol)


@pytest.mark.parametrize("bad", [0.5, 2, -1, np.nan])
def test_a_mask_that_is_not_zero_one_is_refused(backend, bad):
    x, y, mask = _softmax_case(np.float64)
    weights = mask.astype(np.float64)
    weights[2, 3] = bad
    with pytest.raises(ValueError, match=r"temporal_softmax_loss: mask must be boolean or hold "
                                         r"only 0 and 1, got .* at \[2, 3\]"):
        layers.temporal_softmax_loss(x, y, weights)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int64, np.float32, np.float64])
def test_a_zero_one_mask_of_any_number_type_is_the_boolean_mask(backend, dtype):
    x, y, mask = _softmax_case(np.float64)
    want = layers.temporal_softmax_loss(x, y, mask)
    got = layers.temporal_softmax_loss(x, y, mask.astype(dtype))
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
