"""Numeric gradient checks (centred differences), as in CS231n."""
import numpy as np


def _centred_differences(f, x, h, combine, verbose=False):
    """For each entry of ``x`` (nudged in place, then restored):
    combine(f(x + h), f(x - h)) / 2h."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.copy(f(x))
        x[ix] = old - h
        neg = np.copy(f(x))
        x[ix] = old
        grad[ix] = combine(pos, neg) / (2 * h)
        if verbose:
            print(ix, grad[ix])
        it.iternext()
    return grad


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of the scalar function ``f`` at ``x``."""
    return _centred_differences(f, x, h, lambda pos, neg: pos - neg, verbose)


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of ``sum(f(x) * df)`` at ``x``: the vector-Jacobian product of an
    array-valued ``f`` with the upstream gradient ``df``."""
    return _centred_differences(f, x, h, lambda pos, neg: np.sum((pos - neg) * df))


def rel_error(x, y):
    """Largest relative error, max |x - y| / max(1e-8, |x| + |y|)."""
    x, y = np.asarray(x), np.asarray(y)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))
