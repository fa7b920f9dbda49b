"""Layer benchmarks: every function of the layer API, numpy / numba / cython side by
side (and PyTorch where it has the same op), at three sizes.

Groups are ``function[size]`` so pytest-benchmark prints the implementations of one
function at one size together. Each backend's functions are called directly (the
public ``fastrnn.layers`` adds the same input checks in front of every backend).
At the tiny size every result is also checked against the NumPy reference, so the
CI smoke run (``--benchmark-disable --bench-sizes tiny``) proves each benchmarked
call, PyTorch's included, computes the same thing.

Sizes: tiny = the known-value test sizes (RNN N,D,H = 3,10,4; LSTM N,D,H = 3,4,5);
medium = N 128, D 256, H 512; full = the full-scale shape (N 1024, T 16,
W 256, H 2048, V 1004). All float32, the training dtype.
"""
import functools
from types import SimpleNamespace

import numpy as np
import pytest

from fastrnn.backends import load_backend
from fastrnn.backends.gate_order import from_torch_order, to_torch_order

SIZES = {
    #        batch, time, vocab, (D, H) of the RNN, (D, H) of the LSTM, image features
    "tiny": dict(N=3, T=3, V=10, rnn=(10, 4), lstm=(4, 5), F=10),
    "medium": dict(N=128, T=16, V=1004, rnn=(256, 512), lstm=(256, 512), F=512),
    "full": dict(N=1024, T=16, V=1004, rnn=(256, 2048), lstm=(256, 2048), F=512),
}
ROUNDS = {"medium": 5, "full": 2}    # tiny lets pytest-benchmark calibrate itself
DTYPE = np.float32


@functools.cache
def inputs(size):
    """Every array the benchmarks use at ``size``, drawn once from a fixed seed."""
    cfg = SIZES[size]
    rng = np.random.default_rng(4)
    N, T, V, F = cfg["N"], cfg["T"], cfg["V"], cfg["F"]

    def randn(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(DTYPE)

    a = SimpleNamespace(N=N, T=T, V=V)
    for kind, gates in (("rnn", 1), ("lstm", 4)):
        D, H = cfg[kind]
        setattr(a, kind, SimpleNamespace(
            D=D, H=H, x=randn(N, D), xs=randn(N, T, D), h=randn(N, H), c=randn(N, H),
            Wx=randn(D, gates * H, scale=D ** -0.5), Wh=randn(H, gates * H, scale=H ** -0.5),
            b=randn(gates * H, scale=0.1), dh=randn(N, H), dc=randn(N, H), dhs=randn(N, T, H)))
    H = cfg["lstm"][1]
    a.features, a.W_proj, a.b_proj = randn(N, F), randn(F, H, scale=F ** -0.5), randn(H)
    a.dproj = randn(N, H)
    a.words = rng.integers(0, V, (N, T))
    a.W_embed, a.dembed = randn(V, cfg["lstm"][0], scale=0.01), randn(N, T, cfg["lstm"][0])
    a.hs, a.W_vocab, a.b_vocab = randn(N, T, H), randn(H, V, scale=H ** -0.5), randn(V)
    a.dscores = randn(N, T, V)
    a.scores, a.targets = randn(N, T, V, scale=2.0), rng.integers(0, V, (N, T))
    a.mask = rng.random((N, T)) < 0.9
    return a


# ------------------------------------------------- fastrnn backends: one runner per function

def fastrnn_runner(be, function, a):
    """A zero-argument callable running ``function`` on backend ``be``; backward runners
    reuse one cache made by the matching forward (no backend mutates its cache)."""
    r, l = a.rnn, a.lstm
    forward = {
        "affine_forward": lambda: be.affine_forward(a.features, a.W_proj, a.b_proj),
        "rnn_step_forward": lambda: be.rnn_step_forward(r.x, r.h, r.Wx, r.Wh, r.b),
        "rnn_forward": lambda: be.rnn_forward(r.xs, r.h, r.Wx, r.Wh, r.b),
        "word_embedding_forward": lambda: be.word_embedding_forward(a.words, a.W_embed),
        "lstm_step_forward": lambda: be.lstm_step_forward(l.x, l.h, l.c, l.Wx, l.Wh, l.b),
        "lstm_forward": lambda: be.lstm_forward(l.xs, l.h, l.Wx, l.Wh, l.b),
        "temporal_affine_forward": lambda: be.temporal_affine_forward(a.hs, a.W_vocab, a.b_vocab),
    }
    if function in forward:
        run = forward[function]
        return lambda: run()[:-1]                       # drop the backend-private cache
    if function == "temporal_softmax_loss":
        return lambda: be.temporal_softmax_loss(a.scores, a.targets, a.mask)
    if function == "lstm_step_pair":                     # the speed target: forward + backward
        def pair():
            next_h, next_c, cache = be.lstm_step_forward(l.x, l.h, l.c, l.Wx, l.Wh, l.b)
            return (next_h, next_c) + tuple(be.lstm_step_backward(l.dh, l.dc, cache))
        return pair
    upstream = {
        "affine_backward": (a.dproj,), "rnn_step_backward": (r.dh,), "rnn_backward": (r.dhs,),
        "word_embedding_backward": (a.dembed,), "lstm_step_backward": (l.dh, l.dc),
        "lstm_backward": (l.dhs,), "temporal_affine_backward": (a.dscores,),
    }[function]
    cache = forward[function.replace("backward", "forward")]()[-1]
    backward = getattr(be, function)
    return lambda: backward(*upstream, cache)


# ------------------------------------------------------------ PyTorch, where the op exists

def _ifgo(W, H):
    """fastrnn's gate blocks i, f, o, g (columns) -> PyTorch's i, f, g, o (rows)."""
    return to_torch_order(W, H).T.copy()


def _from_ifgo(G, H):
    """PyTorch's i, f, g, o rows -> fastrnn's i, f, o, g columns."""
    return from_torch_order(G.T, H)


def torch_runner(function, a):
    """The same computation in PyTorch, or None when PyTorch has no matching op."""
    import torch
    import torch.nn.functional as F
    t = torch.from_numpy
    r, l = a.rnn, a.lstm
    H = l.H
    lstm_w = [t(_ifgo(l.Wx, H)), t(_ifgo(l.Wh, H)), t(_ifgo(l.b, H)), torch.zeros(4 * H)]
    rnn_w = [t(r.Wx.T.copy()), t(r.Wh.T.copy()), t(r.b), torch.zeros(r.H)]

    def no_grad(fn):
        def run():
            with torch.no_grad():
                out = fn()
            return tuple(o.numpy() for o in (out if isinstance(out, tuple) else (out,)))
        return run

    def sequence(module_cls, kind, weights, state):
        net = module_cls(kind.D, kind.H, batch_first=True)
        with torch.no_grad():
            for p, w in zip((net.weight_ih_l0, net.weight_hh_l0, net.bias_ih_l0, net.bias_hh_l0),
                            weights):
                p.copy_(w)
        return lambda: net(t(kind.xs), state)[0]

    if function == "affine_forward":
        return no_grad(lambda: F.linear(t(a.features), t(a.W_proj.T.copy()), t(a.b_proj)))
    if function == "rnn_step_forward":
        return no_grad(lambda: torch.rnn_tanh_cell(t(r.x), t(r.h), *rnn_w))
    if function == "rnn_forward":
        return no_grad(sequence(torch.nn.RNN, r, rnn_w, t(r.h)[None]))
    if function == "lstm_step_forward":
        return no_grad(lambda: torch.lstm_cell(t(l.x), (t(l.h), t(l.c)), *lstm_w))
    if function == "lstm_forward":
        state = (t(l.h)[None], torch.zeros(1, a.N, H))
        return no_grad(sequence(torch.nn.LSTM, l, lstm_w, state))
    if function == "word_embedding_forward":
        return no_grad(lambda: F.embedding(t(a.words), t(a.W_embed)))
    if function == "temporal_affine_forward":
        return no_grad(lambda: F.linear(t(a.hs), t(a.W_vocab.T.copy()), t(a.b_vocab)))
    if function == "lstm_step_pair":
        def pair():
            x, h, c = (t(v).requires_grad_() for v in (l.x, l.h, l.c))
            w = [p.clone().requires_grad_() for p in lstm_w[:3]]
            next_h, next_c = torch.lstm_cell(x, (h, c), *w, lstm_w[3])
            torch.autograd.backward([next_h, next_c], [t(l.dh), t(l.dc)])
            dWx, dWh = (_from_ifgo(p.grad.numpy(), H) for p in w[:2])
            db = _from_ifgo(w[2].grad.numpy()[:, None], H)[0]
            return (next_h.detach().numpy(), next_c.detach().numpy(), x.grad.numpy(),
                    h.grad.numpy(), c.grad.numpy(), dWx, dWh, db)
        return pair
    if function == "temporal_softmax_loss":
        def loss_and_grad():
            x = t(a.scores).requires_grad_()
            R = a.N * a.T
            rows = F.cross_entropy(x.view(R, a.V), t(a.targets).view(R), reduction="none")
            loss = (rows * t(a.mask).view(R)).sum() / a.N
            loss.backward()
            return loss.detach().numpy(), x.grad.numpy()
        return loss_and_grad
    return None


# --------------------------------------------------------------------------- the benchmark

FUNCTIONS = [
    "affine_forward", "affine_backward",
    "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
    "word_embedding_forward", "word_embedding_backward",
    "lstm_step_forward", "lstm_step_backward", "lstm_step_pair", "lstm_forward", "lstm_backward",
    "temporal_affine_forward", "temporal_affine_backward",
    "temporal_softmax_loss",
]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_layer(benchmark, function, size, impl):
    a = inputs(size)
    if impl == "torch":
        run = torch_runner(function, a)
        if run is None:
            pytest.skip(f"PyTorch has no op matching {function}")
    else:
        run = fastrnn_runner(load_backend(impl), function, a)
    if impl == "numba":
        run()                           # JIT compile (or load the cache) outside the timing
    benchmark.group = f"{function}[{size}]"
    benchmark.extra_info.update(function=function, size=size, impl=impl)
    if size == "tiny":
        out = benchmark(run)
    else:
        out = benchmark.pedantic(run, rounds=ROUNDS[size], iterations=1)
    if size == "tiny" and impl != "numpy":
        expected = fastrnn_runner(load_backend("numpy"), function, a)()
        for got, want in zip(out, expected, strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5,
                                       err_msg=f"{impl} {function} disagrees with numpy")
