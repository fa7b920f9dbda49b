"""The public layer API (CS231n ``rnn_layers.py`` contract).

Every forward returns ``(out, cache)`` and every backward takes ``(dout, cache)``.
Each function checks its inputs, then runs on the active backend (see
``fastrnn.set_backend``). A cache remembers the backend that made it, and the
matching backward always runs on that backend.

Shapes: N batch, T time, D input, H hidden, V vocabulary, M output. Float
arguments must all be float32 or all float64; outputs keep that dtype.
"""
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from fastrnn._validate import Signature
from fastrnn.backends import API, active, load_backend

__all__ = list(API)

Array = npt.NDArray[Any]


class Cache(NamedTuple):
    """What a forward hands to its backward: the backend's own cache, tagged."""
    backend: str
    op: str            # the forward that made it
    out_shape: tuple   # shape every upstream gradient must have
    dtype: Any
    data: Any          # backend-specific


def _open(fn, op, cache, **douts):
    """Check a backward's cache and upstream gradients; return (backend, backend cache)."""
    if not isinstance(cache, Cache) or cache.op != op:
        got = cache.op if isinstance(cache, Cache) else type(cache).__name__
        raise TypeError(f"{fn}: cache must be the cache returned by {op}, got {got}")
    for name, dout in douts.items():
        if not isinstance(dout, np.ndarray):
            raise TypeError(f"{fn}: {name} must be a numpy.ndarray, got {type(dout).__name__}")
        if dout.shape != cache.out_shape:
            raise ValueError(f"{fn}: {name} must have the shape of the forward output "
                             f"{cache.out_shape}, got {dout.shape}")
        if dout.dtype != cache.dtype:
            raise TypeError(f"{fn}: {name} must be {cache.dtype} like the forward pass, "
                            f"got {dout.dtype}")
    return load_backend(cache.backend), cache.data


# --------------------------------------------------------------------- affine

def affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Cache]:
    """Affine map. x (N, D), w (D, M), b (M,) -> out (N, M), cache."""
    s = Signature("affine_forward")
    s.floats("x", x, "N", "D")
    s.floats("w", w, "D", "M")
    s.floats("b", b, "M")
    be = active()
    out, cache = be.affine_forward(x, w, b)
    return out, Cache(be.name, "affine_forward", out.shape, out.dtype, cache)


def affine_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dout (N, M) -> dx (N, D), dw (D, M), db (M,)."""
    be, data = _open("affine_backward", "affine_forward", cache, dout=dout)
    return be.affine_backward(dout, data)


# ------------------------------------------------------------------------ RNN

def rnn_step_forward(x: Array, prev_h: Array, Wx: Array, Wh: Array,
                     b: Array) -> tuple[Array, Cache]:
    """One vanilla-RNN step: next_h = tanh(x @ Wx + prev_h @ Wh + b).

    x (N, D), prev_h (N, H), Wx (D, H), Wh (H, H), b (H,) -> next_h (N, H), cache.
    """
    s = Signature("rnn_step_forward")
    s.floats("x", x, "N", "D")
    s.floats("prev_h", prev_h, "N", "H")
    s.floats("Wx", Wx, "D", "H")
    s.floats("Wh", Wh, "H", "H")
    s.floats("b", b, "H")
    be = active()
    next_h, cache = be.rnn_step_forward(x, prev_h, Wx, Wh, b)
    return next_h, Cache(be.name, "rnn_step_forward", next_h.shape, next_h.dtype, cache)


def rnn_step_backward(dnext_h: Array, cache: Cache) -> tuple[Array, Array, Array, Array, Array]:
    """dnext_h (N, H) -> dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    be, data = _open("rnn_step_backward", "rnn_step_forward", cache, dnext_h=dnext_h)
    return be.rnn_step_backward(dnext_h, data)


def rnn_forward(x: Array, h0: Array, Wx: Array, Wh: Array, b: Array) -> tuple[Array, Cache]:
    """Vanilla RNN over a sequence.

    x (N, T, D), h0 (N, H), Wx (D, H), Wh (H, H), b (H,) -> h (N, T, H), cache.
    """
    s = Signature("rnn_forward")
    s.floats("x", x, "N", "T", "D")
    s.floats("h0", h0, "N", "H")
    s.floats("Wx", Wx, "D", "H")
    s.floats("Wh", Wh, "H", "H")
    s.floats("b", b, "H")
    be = active()
    h, cache = be.rnn_forward(x, h0, Wx, Wh, b)
    return h, Cache(be.name, "rnn_forward", h.shape, h.dtype, cache)


def rnn_backward(dh: Array, cache: Cache) -> tuple[Array, Array, Array, Array, Array]:
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    be, data = _open("rnn_backward", "rnn_forward", cache, dh=dh)
    return be.rnn_backward(dh, data)


# ------------------------------------------------------------------ embedding

def word_embedding_forward(x: Array, W: Array) -> tuple[Array, Cache]:
    """Look up word vectors. x int (N, T) in [0, V), W (V, D) -> out (N, T, D), cache."""
    s = Signature("word_embedding_forward")
    s.floats("W", W, "V", "D")
    s.tokens("x", x, "N", "T", high=W.shape[0])
    be = active()
    out, cache = be.word_embedding_forward(x, W)
    return out, Cache(be.name, "word_embedding_forward", out.shape, out.dtype, cache)


def word_embedding_backward(dout: Array, cache: Cache) -> Array:
    """dout (N, T, D) -> dW (V, D)."""
    be, data = _open("word_embedding_backward", "word_embedding_forward", cache, dout=dout)
    return be.word_embedding_backward(dout, data)


# ----------------------------------------------------------------------- LSTM

def lstm_step_forward(x: Array, prev_h: Array, prev_c: Array, Wx: Array, Wh: Array,
                      b: Array) -> tuple[Array, Array, Cache]:
    """One LSTM step, gates in the order i, f, o, g.

    x (N, D), prev_h (N, H), prev_c (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,)
    -> next_h (N, H), next_c (N, H), cache.
    """
    s = Signature("lstm_step_forward")
    s.floats("prev_h", prev_h, "N", "H")
    s.floats("prev_c", prev_c, "N", "H")
    s.floats("x", x, "N", "D")
    s.floats("Wx", Wx, "D", "4H")
    s.floats("Wh", Wh, "H", "4H")
    s.floats("b", b, "4H")
    be = active()
    next_h, next_c, cache = be.lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b)
    return next_h, next_c, Cache(be.name, "lstm_step_forward", next_h.shape, next_h.dtype, cache)


def lstm_step_backward(dnext_h: Array, dnext_c: Array,
                       cache: Cache) -> tuple[Array, Array, Array, Array, Array, Array]:
    """dnext_h, dnext_c (N, H) -> dx, dprev_h, dprev_c, dWx, dWh, db."""
    be, data = _open("lstm_step_backward", "lstm_step_forward", cache,
                     dnext_h=dnext_h, dnext_c=dnext_c)
    return be.lstm_step_backward(dnext_h, dnext_c, data)


def lstm_forward(x: Array, h0: Array, Wx: Array, Wh: Array, b: Array) -> tuple[Array, Cache]:
    """LSTM over a sequence with a zero initial cell state.

    x (N, T, D), h0 (N, H), Wx (D, 4H), Wh (H, 4H), b (4H,) -> h (N, T, H), cache.
    """
    s = Signature("lstm_forward")
    s.floats("h0", h0, "N", "H")
    s.floats("x", x, "N", "T", "D")
    s.floats("Wx", Wx, "D", "4H")
    s.floats("Wh", Wh, "H", "4H")
    s.floats("b", b, "4H")
    be = active()
    h, cache = be.lstm_forward(x, h0, Wx, Wh, b)
    return h, Cache(be.name, "lstm_forward", h.shape, h.dtype, cache)


def lstm_backward(dh: Array, cache: Cache) -> tuple[Array, Array, Array, Array, Array]:
    """dh (N, T, H) -> dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    be, data = _open("lstm_backward", "lstm_forward", cache, dh=dh)
    return be.lstm_backward(dh, data)


# ------------------------------------------------------------ temporal layers

def temporal_affine_forward(x: Array, w: Array, b: Array) -> tuple[Array, Cache]:
    """The same affine map at every timestep. x (N, T, D), w (D, M), b (M,) -> out (N, T, M)."""
    s = Signature("temporal_affine_forward")
    s.floats("x", x, "N", "T", "D")
    s.floats("w", w, "D", "M")
    s.floats("b", b, "M")
    be = active()
    out, cache = be.temporal_affine_forward(x, w, b)
    return out, Cache(be.name, "temporal_affine_forward", out.shape, out.dtype, cache)


def temporal_affine_backward(dout: Array, cache: Cache) -> tuple[Array, Array, Array]:
    """dout (N, T, M) -> dx (N, T, D), dw (D, M), db (M,)."""
    be, data = _open("temporal_affine_backward", "temporal_affine_forward", cache, dout=dout)
    return be.temporal_affine_backward(dout, data)


def temporal_softmax_loss(x: Array, y: Array, mask: Array,
                          verbose: bool = False) -> tuple[float, Array]:
    """Masked softmax cross-entropy, summed over (n, t) where mask is true, divided by N.

    x (N, T, V) scores, y int (N, T) in [0, V), mask (N, T) -> loss (scalar), dx (N, T, V).
    """
    s = Signature("temporal_softmax_loss")
    s.floats("x", x, "N", "T", "V")
    s.tokens("y", y, "N", "T", high=x.shape[2])
    s.mask("mask", mask, "N", "T")
    return active().temporal_softmax_loss(x, y, mask, verbose)
