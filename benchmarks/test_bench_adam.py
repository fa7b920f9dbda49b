"""Adam benchmarks: one update of every weight of the captioning LSTM, the reference rule
``optim.adam`` (fresh arrays, a chain of temporaries) beside the fused in-place kernel
``adam_update`` of each backend, and PyTorch's ``torch.optim.Adam`` on the same weights.

    pytest benchmarks/test_bench_adam.py --benchmark-only --bench-sizes full

Groups are ``adam[size]``. Sizes are the parameter sets of a CaptioningRNN: tiny
(D 10, W 4, H 5, V 10), medium (H 512) and full (the full-scale shape: H 2048,
22 M weights). All float32. At the tiny size each contender's single step from one
fixed state is also checked against ``optim.adam``, so the CI smoke run
(``--benchmark-disable --bench-sizes tiny``) proves every benchmarked update is Adam.
"""
import functools

import numpy as np
import pytest

from fastrnn import optim
from fastrnn.backends import load_backend

SIZES = {
    #        image features, word vectors, hidden, vocabulary
    "tiny": dict(F=10, W=4, H=5, V=10),
    "medium": dict(F=512, W=256, H=512, V=1004),
    "full": dict(F=512, W=256, H=2048, V=1004),
}
ROUNDS = {"medium": 5, "full": 5}    # tiny lets pytest-benchmark calibrate itself
DTYPE = np.float32
CONFIG = {"learning_rate": 1e-4, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}


@functools.cache
def shapes(size):
    """name -> shape of every CaptioningRNN (LSTM) weight at ``size``."""
    s = SIZES[size]
    F, W, H, V = s["F"], s["W"], s["H"], s["V"]
    return {"W_proj": (F, H), "b_proj": (H,), "W_embed": (V, W), "Wx": (W, 4 * H),
            "Wh": (H, 4 * H), "b": (4 * H,), "W_vocab": (H, V), "b_vocab": (V,)}


def state(size, seed=5):
    """Fresh weights, gradients and a mid-training Adam state (t = 3) at ``size``."""
    rng = np.random.default_rng(seed)

    def randn(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(DTYPE)

    params, grads, configs = {}, {}, {}
    for name, shape in shapes(size).items():
        params[name], grads[name] = randn(shape, 0.1), randn(shape, 1e-2)
        configs[name] = dict(CONFIG, m=randn(shape, 1e-3), v=randn(shape, 1e-3) ** 2, t=3)
    return params, grads, configs


def runner(impl, params, grads, configs):
    """A zero-argument callable doing one Adam step of every weight with ``impl``;
    every contender updates ``params`` (the dict) to the new weights."""
    if impl == "reference":
        def step():
            for name, w in params.items():
                params[name], configs[name] = optim.adam(w, grads[name], configs[name])
        return step
    if impl == "torch":
        return torch_runner(params, grads, configs)
    kernel = load_backend(impl).adam_update

    def step():   # optim.adam_in_place, with the backend chosen here rather than globally
        for name, w in params.items():
            c = configs[name]
            t = c["t"] = c["t"] + 1
            kernel(w, grads[name], c["m"], c["v"], c["learning_rate"], c["beta1"], c["beta2"],
                   c["epsilon"], 1 - c["beta1"] ** t, 1 - c["beta2"] ** t)
    return step


def torch_runner(params, grads, configs):
    """torch.optim.Adam (its default multi-tensor implementation) on views of the same
    arrays, its moments and step count loaded from ``configs``."""
    import torch
    names = list(params)
    tensors = [torch.from_numpy(params[n]) for n in names]
    for tensor, name in zip(tensors, names):
        tensor.grad = torch.from_numpy(grads[name])
    adam = torch.optim.Adam(tensors, lr=CONFIG["learning_rate"], eps=CONFIG["epsilon"],
                            betas=(CONFIG["beta1"], CONFIG["beta2"]))
    for tensor, name in zip(tensors, names):
        adam.state[tensor] = {"step": torch.tensor(float(configs[name]["t"])),
                              "exp_avg": torch.from_numpy(configs[name]["m"]),
                              "exp_avg_sq": torch.from_numpy(configs[name]["v"])}

    @torch.no_grad()
    def step():
        adam.step()
    return step


@pytest.mark.parametrize("variant", ["reference", "in_place"])
def test_adam(benchmark, size, impl, variant):
    if variant == "reference":
        if impl != "numpy":
            pytest.skip("the reference rule is NumPy code: benchmarked once, under numpy")
        contender = "reference"
    else:
        contender = impl
    params, grads, configs = state(size)
    step = runner(contender, params, grads, configs)
    step()                               # JIT compile (numba), thread pools, first touch
    benchmark.group = f"adam[{size}]"
    benchmark.extra_info.update(size=size, impl=contender,
                                weights=sum(w.size for w in params.values()))
    if size == "tiny":
        benchmark(step)
        check_one_step(contender, size)
    else:
        benchmark.pedantic(step, rounds=ROUNDS[size], iterations=1)


def check_one_step(contender, size):
    """One step of ``contender`` from a fixed state moves every weight as optim.adam does
    (compared as steps, ~1e-4 each: float32 weights of ~0.1 would hide a wrong step)."""
    params, grads, configs = state(size)
    before = {name: w.copy() for name, w in params.items()}
    expected = {name: optim.adam(w, grads[name], dict(configs[name]))[0] - w
                for name, w in params.items()}
    runner(contender, params, grads, configs)()
    for name, want in expected.items():
        np.testing.assert_allclose(params[name] - before[name], want, rtol=1e-3, atol=5e-8,
                                   err_msg=f"{contender} Adam step of {name}")
