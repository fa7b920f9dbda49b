"""First-order update rules with the CS231n signature.

Each rule is ``next_w, config = rule(w, dw, config=None)``: ``w`` is the current
weight array, ``dw`` its gradient, ``config`` a dict of hyperparameters and of
the rule's own state (moments, step count) that the caller passes back on the
next step. Missing hyperparameters get the CS231n defaults, and the arithmetic
is CS231n's (Adam: ``t += 1``, bias-corrected ``m_hat`` and ``v_hat``, then
``w - learning_rate * m_hat / (sqrt(v_hat) + epsilon)``). Hyperparameters are
read as Python floats, so float32 weights stay float32.

Every rule checks what it is given (``check_config``, ``check_arrays``) and
raises instead of guessing: a config key the rule does not know (``lr`` for
``learning_rate``) is a ValueError that lists the valid keys; so are a NaN,
infinite or negative learning rate, a beta, decay_rate or momentum outside
[0, 1) and an epsilon <= 0. ``dw`` and the state arrays must have w's shape and
dtype: nothing is broadcast, and a float64 gradient for float32 weights is a
TypeError rather than a silent float64 result (cast it with
``dw.astype(w.dtype)``).

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
import difflib
import math
import numbers

import numpy as np

__all__ = ["sgd", "sgd_momentum", "rmsprop", "adam", "adam_state", "adam_in_place", "RULES",
           "get_rule", "check_config", "check_arrays", "DEFAULTS", "STATE_KEYS"]

# Each rule's hyperparameters with their CS231n defaults, and the state it keeps in config.
DEFAULTS = {
    "sgd": {"learning_rate": 1e-2},
    "sgd_momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "rmsprop": {"learning_rate": 1e-2, "decay_rate": 0.99, "epsilon": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8},
}
STATE_KEYS = {"sgd": (), "sgd_momentum": ("velocity",), "rmsprop": ("cache",),
              "adam": ("m", "v", "t")}
# Other libraries' spellings of the same settings, named in the error for an unknown key.
_ALIASES = {"lr": "learning_rate", "eps": "epsilon", "beta_1": "beta1", "beta_2": "beta2",
            "rho": "decay_rate", "decay": "decay_rate", "mu": "momentum"}
# The range of each hyperparameter: (low, low included, high, high included).
_RANGES = {
    "learning_rate": (0.0, True, math.inf, False),
    "momentum": (0.0, True, 1.0, False),
    "decay_rate": (0.0, True, 1.0, False),
    "beta1": (0.0, True, 1.0, False),
    "beta2": (0.0, True, 1.0, False),
    "epsilon": (0.0, False, math.inf, False),
}


def check_config(rule, config):
    """Raise ValueError unless ``config`` suits the update rule ``rule``.

    ``rule`` is a name in ``RULES`` or one of the rule functions; any other
    callable is the caller's own rule, whose config is not checked. Every key
    must be one of the rule's hyperparameters or state keys, and every
    hyperparameter present a finite real number in its range: learning_rate
    >= 0, momentum, decay_rate, beta1 and beta2 in [0, 1), epsilon > 0. Adam's
    step count ``t`` must be an integer >= 0. Returns ``config``.
    """
    name = rule if isinstance(rule, str) else getattr(rule, "__name__", None)
    if name not in DEFAULTS or (not isinstance(rule, str) and RULES.get(name) is not rule):
        if isinstance(rule, str):
            get_rule(rule)   # raises for an unknown name
        return config
    if not isinstance(config, dict):
        raise TypeError(f"optim.{name}: config must be a dict, got {type(config).__name__}")
    valid = sorted([*DEFAULTS[name], *STATE_KEYS[name]])
    for key in config:
        if key not in valid:
            close = ([_ALIASES[key]] if _ALIASES.get(key) in valid
                     else difflib.get_close_matches(str(key), valid, n=1))
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"optim.{name}: unknown config key {key!r}{hint}; the valid keys "
                             f"are {valid}")
    for key in DEFAULTS[name]:
        if key in config:
            _check_hyperparameter(name, key, config[key])
    if "t" in config:
        t = config["t"]
        if not isinstance(t, numbers.Integral) or isinstance(t, bool) or t < 0:
            raise ValueError(f"optim.{name}: config['t'] (the step count) must be an integer "
                             f">= 0, got {t!r}")
    return config


def _check_hyperparameter(name, key, value):
    low, low_in, high, high_in = _RANGES[key]
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = (math.isfinite(value) and (value > low or (low_in and value == low))
              and (value < high or (high_in and value == high)))
    if not ok:
        interval = (f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
                    if math.isfinite(high) else f"{'>=' if low_in else '>'} {low:g}")
        raise ValueError(f"optim.{name}: config[{key!r}] must be a finite number "
                         f"{'in ' if math.isfinite(high) else ''}{interval}, got {value!r}")


def check_arrays(rule_name, w, dw, config=None):
    """Raise unless ``dw`` and the state arrays in ``config`` match ``w``.

    ``w`` and ``dw`` must be floating-point numpy arrays of one shape and dtype
    (no broadcasting, no silent change of precision); so must every state array
    (velocity, cache, m, v) present in ``config``. TypeError for a wrong type or
    dtype, ValueError for a wrong shape.
    """
    fn = f"optim.{rule_name}"
    for name, array in (("w", w), ("dw", dw)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(array).__name__}")
        if array.dtype.kind != "f":
            raise TypeError(f"{fn}: {name} must be floating point, got {array.dtype}")
    named = [("dw", dw)] + [(f"config[{k!r}]", config[k]) for k in STATE_KEYS.get(rule_name, ())
                            if config and k != "t" and k in config]
    for name, array in named:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"{fn}: {name} must be a numpy.ndarray of w's shape {w.shape}, "
                            f"got {type(array).__name__}")
        if array.shape != w.shape:
            raise ValueError(f"{fn}: {name} has shape {array.shape} but w has {w.shape}; "
                             f"they must match (nothing is broadcast)")
        if array.dtype != w.dtype:
            raise TypeError(f"{fn}: {name} is {array.dtype} but w is {w.dtype}; the step is "
                            f"computed in w's dtype, so cast it (e.g. dw.astype(w.dtype))")


def _prepare(rule_name, w, dw, config):
    """The checked config of one step of ``rule_name``, defaults filled in."""
    config = {} if config is None else config
    check_config(rule_name, config)
    check_arrays(rule_name, w, dw, config)
    for key, default in DEFAULTS[rule_name].items():
        config.setdefault(key, default)
    return config


def sgd(w, dw, config=None):
    """Vanilla stochastic gradient descent.

    config: learning_rate (1e-2).
    """
    config = _prepare("sgd", w, dw, config)
    return w - float(config["learning_rate"]) * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v.

    config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    config = _prepare("sgd_momentum", w, dw, config)
    v = config.get("velocity", np.zeros_like(w))
    v = float(config["momentum"]) * v - float(config["learning_rate"]) * dw
    config["velocity"] = v
    return w + v, config


def rmsprop(w, dw, config=None):
    """RMSProp: a running average of squared gradients scales each step.

    config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8),
    cache (zeros like w).
    """
    config = _prepare("rmsprop", w, dw, config)
    cache = config.get("cache", np.zeros_like(w))
    decay = float(config["decay_rate"])
    cache = decay * cache + (1 - decay) * (dw * dw)
    config["cache"] = cache
    step = float(config["learning_rate"]) * dw / (np.sqrt(cache) + float(config["epsilon"]))
    return w - step, config


def adam(w, dw, config=None):
    """Adam with bias correction; the step count t is incremented before use.

    config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8),
    m, v (zeros like w), t (0). Exactly CS231n's step::

        t += 1
        m = beta1 * m + (1 - beta1) * dw
        v = beta2 * v + (1 - beta2) * dw**2
        m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)
        next_w = w - learning_rate * m_hat / (sqrt(v_hat) + epsilon)
    """
    config = _prepare("adam", w, dw, config)
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
    ValueError naming the argument otherwise, and checks the hyperparameters
    as ``check_config`` does.
    """
    config = {} if config is None else config
    check_config("adam", config)
    for key, default in DEFAULTS["adam"].items():
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
