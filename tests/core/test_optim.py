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


# ------------------------------------------------------------- validation

@pytest.mark.parametrize("rule, key, value, words", [
    ("sgd", "lr", 0.1, r"unknown config key 'lr' \(did you mean 'learning_rate'\?\); "
                       r"the valid keys are \['learning_rate'\]"),
    ("adam", "beta_1", 0.9, r"unknown config key 'beta_1'.*'beta1', 'beta2', 'epsilon'"),
    ("sgd", "learning_rate", float("nan"), r"config\['learning_rate'\] must be a finite number"),
    ("sgd", "learning_rate", float("inf"), r"config\['learning_rate'\] must be a finite"),
    ("sgd", "learning_rate", -1e-3, r"config\['learning_rate'\] must be .* >= 0"),
    ("sgd", "learning_rate", "0.1", r"config\['learning_rate'\] must be a finite number"),
    ("sgd_momentum", "momentum", 1.0, r"config\['momentum'\] must be .* in \[0, 1\)"),
    ("sgd_momentum", "momentum", -0.1, r"config\['momentum'\]"),
    ("rmsprop", "decay_rate", 1.5, r"config\['decay_rate'\] must be .* in \[0, 1\)"),
    ("rmsprop", "epsilon", 0.0, r"config\['epsilon'\] must be .* > 0"),
    ("adam", "beta1", 1.0, r"config\['beta1'\] must be .* in \[0, 1\)"),
    ("adam", "beta2", float("nan"), r"config\['beta2'\]"),
    ("adam", "epsilon", -1e-8, r"config\['epsilon'\] must be .* > 0"),
    ("adam", "t", -1, r"config\['t'\] \(the step count\) must be an integer >= 0"),
])
def test_bad_config_is_rejected_by_name(rule, key, value, words, arrays):
    w, dw = arrays
    with pytest.raises(ValueError, match=words):
        optim.RULES[rule](w, dw, {key: value})
    with pytest.raises(ValueError, match=words):
        optim.check_config(rule, {key: value})
    if rule == "adam":
        with pytest.raises(ValueError, match=words):
            optim.adam_in_place(w.copy(), dw, {key: value})


def test_state_keys_and_edge_values_are_accepted(arrays):
    w, dw = arrays
    optim.check_config("adam", {"learning_rate": 0, "beta1": 0.0, "beta2": 0.0, "t": 3,
                                "m": np.zeros_like(w), "v": np.zeros_like(w)})
    optim.check_config("sgd_momentum", {"velocity": np.zeros_like(w), "momentum": 0})
    optim.check_config(lambda w, dw, config: (w, config), {"anything": "goes"})  # own rule
    with pytest.raises(ValueError, match="unknown update rule 'adamw'"):
        optim.check_config("adamw", {})


@pytest.mark.parametrize("rule", sorted(optim.RULES))
def test_gradient_must_match_the_weights(rule):
    w = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"dw has shape \(4,\) but w has \(3, 4\)"):
        optim.RULES[rule](w, np.ones(4), {})
    # A float64 gradient for float32 weights would make the weights float64: an error.
    with pytest.raises(TypeError, match="dw is float64 but w is float32.*astype"):
        optim.RULES[rule](w.astype(np.float32), np.ones((3, 4)), {})
    with pytest.raises(TypeError, match="dw must be a numpy.ndarray"):
        optim.RULES[rule](w, [[0.0] * 4] * 3, {})


@pytest.mark.parametrize("rule, key", [("sgd_momentum", "velocity"), ("rmsprop", "cache"),
                                       ("adam", "m"), ("adam", "v")])
def test_state_arrays_must_match_the_weights(rule, key):
    w, dw = np.zeros((3, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match=rf"config\['{key}'\] has shape \(4,\)"):
        optim.RULES[rule](w, dw, {key: np.zeros(4)})
    with pytest.raises(TypeError, match=rf"config\['{key}'\] is float32 but w is float64"):
        optim.RULES[rule](w, dw, {key: np.zeros((3, 4), np.float32)})


@pytest.mark.parametrize("update_rule, optim_config, words", [
    ("adam", {"lr": 1e-3}, r"optim.adam: unknown config key 'lr' \(did you mean 'learning_rate'"),
    ("sgd", {"learning_rate": float("nan")}, r"optim.sgd: config\['learning_rate'\]"),
    ("adam", {"beta2": 1.0}, r"optim.adam: config\['beta2'\]"),
    (optim.rmsprop, {"epsilon": 0}, r"optim.rmsprop: config\['epsilon'\]"),
])
def test_solver_checks_its_optim_config_up_front(update_rule, optim_config, words):
    from fastrnn.captioning.model import CaptioningRNN
    from fastrnn.captioning.solver import CaptioningSolver

    words_to_idx = {"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}
    data = {"train_captions": np.array([[1, 3, 2]]), "train_image_idxs": np.array([0]),
            "train_features": np.zeros((1, 4), np.float32)}
    model = CaptioningRNN(words_to_idx, input_dim=4, wordvec_dim=3, hidden_dim=5, seed=0)
    with pytest.raises(ValueError, match=words):
        CaptioningSolver(model, data, update_rule=update_rule, optim_config=optim_config,
                         verbose=False, progress=False, seed=0)
