"""Update rules against hand-written, element-by-element reference steps."""
import math

import numpy as np
import pytest

from fastrnn import optim


def elementwise(fn, *arrays):
    """Apply a scalar Python function to every element (the reference steps below)."""
    flat = [a.ravel().tolist() for a in arrays]
    return np.array([fn(*values) for values in zip(*flat)]).reshape(arrays[0].shape)


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 5)), rng.standard_normal((4, 5))


def test_sgd(arrays):
    w, dw = arrays
    next_w, config = optim.sgd(w, dw, {"learning_rate": 0.3})
    np.testing.assert_allclose(next_w, elementwise(lambda w, d: w - 0.3 * d, w, dw), rtol=1e-14)
    assert optim.sgd(w, dw)[1]["learning_rate"] == 1e-2


def test_sgd_momentum_two_steps(arrays):
    w, dw = arrays
    config = {"learning_rate": 0.1, "momentum": 0.8}
    w1, config = optim.sgd_momentum(w, dw, config)
    w2, config = optim.sgd_momentum(w1, 2 * dw, config)
    v1 = elementwise(lambda d: -0.1 * d, dw)
    v2 = elementwise(lambda v, d: 0.8 * v - 0.1 * 2 * d, v1, dw)
    np.testing.assert_allclose(w1, w + v1, rtol=1e-14)
    np.testing.assert_allclose(w2, w + v1 + v2, rtol=1e-14)
    np.testing.assert_allclose(config["velocity"], v2, rtol=1e-14)
    defaults = optim.sgd_momentum(w, dw)[1]
    assert (defaults["learning_rate"], defaults["momentum"]) == (1e-2, 0.9)


def test_rmsprop_two_steps(arrays):
    w, dw = arrays
    lr, decay, eps = 0.01, 0.9, 1e-8
    config = {"learning_rate": lr, "decay_rate": decay}
    w1, config = optim.rmsprop(w, dw, config)
    w2, config = optim.rmsprop(w1, -dw, config)

    def reference(w, d):
        cache = (1 - decay) * d * d
        w = w - lr * d / (math.sqrt(cache) + eps)
        cache = decay * cache + (1 - decay) * d * d
        return w + lr * d / (math.sqrt(cache) + eps)

    np.testing.assert_allclose(w2, elementwise(reference, w, dw), rtol=1e-12)
    defaults = optim.rmsprop(w, dw)[1]
    assert (defaults["learning_rate"], defaults["decay_rate"], defaults["epsilon"]) == (1e-2, 0.99, 1e-8)


def test_adam_three_steps(arrays):
    w, dw = arrays
    b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
    gradients = [dw, 0.5 * dw + 1, -dw]
    config = None
    next_w = w
    for g in gradients:
        next_w, config = optim.adam(next_w, g, config)
    assert config["t"] == 3

    def reference(w, d):
        m = v = 0.0
        for t, g in enumerate([d, 0.5 * d + 1, -d], start=1):
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            w = w - lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
        return w

    np.testing.assert_allclose(next_w, elementwise(reference, w, dw), rtol=1e-12)


def test_adam_first_step_is_learning_rate_times_sign(arrays):
    # Bias correction makes m_hat = dw and v_hat = dw**2 at t = 1.
    w, dw = arrays
    next_w, config = optim.adam(w, dw, {"learning_rate": 0.01})
    np.testing.assert_allclose(w - next_w, 0.01 * np.sign(dw), rtol=1e-6)
    assert config["t"] == 1


def test_adam_resumes_from_its_state(arrays):
    """Running in two halves with the config passed back is the same as one run."""
    w, dw = arrays
    config, config_b = {}, {}
    a = b = w
    for step in range(4):
        a, config = optim.adam(a, dw * (step + 1), config)
    for step in range(2):
        b, config_b = optim.adam(b, dw * (step + 1), config_b)
    state = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in config_b.items()}
    for step in range(2, 4):
        b, state = optim.adam(b, dw * (step + 1), state)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_rules_keep_float32_and_leave_inputs_alone(rule, arrays):
    w, dw = (a.astype(np.float32) for a in arrays)
    w0, dw0 = w.copy(), dw.copy()
    config = {"learning_rate": np.float64(0.1)}
    next_w, config = optim.RULES[rule](w, dw, config)
    state = {k: v.copy() for k, v in config.items() if isinstance(v, np.ndarray)}
    next_w2, _ = optim.RULES[rule](next_w, dw, dict(config))
    assert next_w.dtype == np.float32 and next_w2.dtype == np.float32
    np.testing.assert_array_equal(w, w0)
    np.testing.assert_array_equal(dw, dw0)
    for k, v in state.items():
        np.testing.assert_array_equal(config[k], v)  # state arrays are replaced, not updated


def test_get_rule():
    assert optim.get_rule("adam") is optim.adam
    with pytest.raises(ValueError, match="unknown update rule 'adamw'"):
        optim.get_rule("adamw")
