"""First-order update rules with the CS231n signature.

Each rule is ``next_w, config = rule(w, dw, config=None)``: ``w`` is the current
weight array, ``dw`` its gradient, ``config`` a dict of hyperparameters and of
the rule's own state (moments, step count) that the caller passes back on the
next step. Missing hyperparameters get the CS231n defaults. Hyperparameters
are read as Python floats, so float32 weights stay float32.

The rules never modify ``w``, ``dw`` or the state arrays they receive: they
return fresh arrays. The solver relies on that to apply a step all at once
(an interrupted step leaves the old weights and state intact). Only the
``config`` dict itself is filled in with defaults and the new state.
"""
import numpy as np

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "RULES", "get_rule"]


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent.

    config: learning_rate (1e-2).
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    return w - float(config["learning_rate"]) * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v.

    config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("momentum", 0.9)
    v = config.get("velocity", np.zeros_like(w))
    v = float(config["momentum"]) * v - float(config["learning_rate"]) * dw
    config["velocity"] = v
    return w + v, config


def rmsprop(w, dw, config=None):
    """RMSProp: a running average of squared gradients scales each step.

    config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8),
    cache (zeros like w).
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-2)
    config.setdefault("decay_rate", 0.99)
    config.setdefault("epsilon", 1e-8)
    cache = config.get("cache", np.zeros_like(w))
    decay = float(config["decay_rate"])
    cache = decay * cache + (1 - decay) * (dw * dw)
    config["cache"] = cache
    step = float(config["learning_rate"]) * dw / (np.sqrt(cache) + float(config["epsilon"]))
    return w - step, config


def adam(w, dw, config=None):
    """Adam with bias correction; the step count t is incremented before use.

    config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8),
    m, v (zeros like w), t (0).
    """
    config = {} if config is None else config
    config.setdefault("learning_rate", 1e-3)
    config.setdefault("beta1", 0.9)
    config.setdefault("beta2", 0.999)
    config.setdefault("epsilon", 1e-8)
    beta1, beta2 = float(config["beta1"]), float(config["beta2"])
    t = config.get("t", 0) + 1
    m = beta1 * config.get("m", np.zeros_like(w)) + (1 - beta1) * dw
    v = beta2 * config.get("v", np.zeros_like(w)) + (1 - beta2) * (dw * dw)
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    config["m"], config["v"], config["t"] = m, v, t
    step = float(config["learning_rate"]) * m_hat / (np.sqrt(v_hat) + float(config["epsilon"]))
    return w - step, config


RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}


def get_rule(name):
    """The update rule called ``name`` (one of ``RULES``)."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown update rule {name!r}; choose one of {sorted(RULES)}") from None
