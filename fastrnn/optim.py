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

``adam_in_place`` is the exception, by design: the same Adam step as ``adam``,
written into ``w`` and the moments in one fused pass of the active backend's
``adam_update`` kernel, with no temporaries. At the full-scale shape (22 M
weights) that is several times faster than ``adam``; the solver uses it on
arrays it owns.
"""
import numpy as np

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "adam_state", "adam_in_place", "RULES",
           "get_rule"]


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


def adam_state(w, dw, config=None):
    """The config of an in-place Adam step on ``w``; modifies no array.

    Fills in the defaults of ``adam``, adds zero moments m, v (of w's shape and
    dtype) when they are missing, and checks what ``adam_in_place`` will touch:
    w and dw float32 or float64 arrays of one shape and dtype, m and v alike,
    w, m, v writeable and not overlapping each other or dw. Raises TypeError or
    ValueError naming the argument otherwise.
    """
    config = {} if config is None else config
    for key, default in (("learning_rate", 1e-3), ("beta1", 0.9), ("beta2", 0.999),
                         ("epsilon", 1e-8)):
        config.setdefault(key, default)
    _check_float_array("w", w)
    _check_like("dw", dw, w)
    for key in ("m", "v"):
        if key not in config:
            config[key] = np.zeros(w.shape, dtype=w.dtype)
        _check_like(f"config[{key!r}]", config[key], w)
    config.setdefault("t", 0)
    written = {"w": w, "config['m']": config["m"], "config['v']": config["v"]}
    for name, array in written.items():
        if not array.flags.writeable:
            raise ValueError(f"adam_in_place: {name} is read-only; it is updated in place")
    named = list(written.items()) + [("dw", dw)]
    for i, (name, array) in enumerate(named):
        for other_name, other in named[i + 1:]:
            if np.may_share_memory(array, other):
                raise ValueError(f"adam_in_place: {name} and {other_name} share memory; "
                                 f"the step needs separate arrays")
    return config


def adam_in_place(w, dw, config=None):
    """Adam with the arithmetic of ``adam``, applied to ``w`` in place.

    Returns ``(w, config)`` with the same ``w`` object, its values updated;
    ``config['m']`` and ``config['v']`` are updated in place too (allocated as
    zeros on the first step) and ``config['t']`` counts the step. The work is
    one pass of the active backend's ``adam_update`` kernel, in w's dtype, with
    the bias corrections computed once in float64: float64 results equal
    ``adam``'s to ~1e-15, float32 to a few ulp (a compiler may fuse a multiply
    and an add). Inputs are checked as in ``adam_state``; non-contiguous arrays
    work (on the NumPy kernel).
    """
    from fastrnn.backends import active

    config = adam_state(w, dw, config)
    beta1, beta2 = float(config["beta1"]), float(config["beta2"])
    t = int(config["t"]) + 1
    active().adam_update(w, dw, config["m"], config["v"], float(config["learning_rate"]),
                         beta1, beta2, float(config["epsilon"]), 1 - beta1 ** t, 1 - beta2 ** t)
    config["t"] = t
    return w, config


def _check_float_array(name, array):
    if not isinstance(array, np.ndarray):
        raise TypeError(f"adam_in_place: {name} must be a numpy.ndarray, "
                        f"got {type(array).__name__}")
    if array.dtype not in (np.float32, np.float64):
        raise TypeError(f"adam_in_place: {name} must be float32 or float64, got {array.dtype}")


def _check_like(name, array, w):
    _check_float_array(name, array)
    if array.shape != w.shape:
        raise ValueError(f"adam_in_place: {name} has shape {array.shape}; w has {w.shape}")
    if array.dtype != w.dtype:
        raise TypeError(f"adam_in_place: {name} is {array.dtype}; w is {w.dtype} (the step "
                        f"is computed and stored in w's dtype)")


RULES = {"sgd": sgd, "sgd_momentum": sgd_momentum, "rmsprop": rmsprop, "adam": adam}


def get_rule(name):
    """The update rule called ``name`` (one of ``RULES``)."""
    try:
        return RULES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown update rule {name!r}; choose one of {sorted(RULES)}") from None
