"""Training-iteration benchmark of the captioning LSTM, every engine side by side
(the library behind ``fastrnn-bench``).

Contenders (all train the same architecture from the same initial weights):

- ``numpy``: the NumPy reference (``CaptioningRNN`` on the numpy backend, readable path);
- ``numba``, ``cython``: the fused fast path (``fastrnn.captioning.engine``) on that backend's kernels;
- ``torch``: the same model written as a PyTorch user would (``fastrnn.captioning.torch_baseline``);
- ``torch-packed``: the same with ``pack_padded_sequence``.

``--precision fp32,bf16`` runs every compiled backend and every PyTorch model in
each precision: fastrnn's 'bf16' (``fastrnn.precision``) and, for PyTorch,
``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and loss. The
reference runs in fp32 only.

One iteration is loss + gradients + Adam update. Contenders take turns (round robin),
so a burst of load from elsewhere on the machine hits all of them alike; every round
also times one large float32 matrix product, the machine's sgemm rate under the same
conditions. Peak memory is measured per contender in a fresh process.
"""
import contextlib
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

import fastrnn
from fastrnn import config, gemm, optim
from fastrnn import precision as precision_mod
from fastrnn.captioning.presets import BENCHMARK_SHAPES as PRESETS  # the name importers use

FULL_RUN_ITERATIONS = 1170   # 3 epochs of 400,135 captions in batches of 1,024
LEARNING_RATE = 1e-4
TORCH_CONTENDERS = ("torch", "torch-packed")
PRECISIONS = precision_mod.PRECISIONS
NUM_BATCHES = 3              # distinct minibatches, cycled through


# ------------------------------------------------------------------ work model

def dense_flops(N, T, D, W, H, V, **_):
    """Floating-point operations of one LSTM iteration computed densely (every one of the T
    steps for every row), as the reference formulation does; Adam and elementwise work excluded.

    Forward h0 = features @ W_proj, x @ Wx, h @ Wh, h @ W_vocab; backward the gradient of
    each weight and of each product's input (dx feeds dW_embed, dh the recurrence).
    """
    G = 4 * H
    return (4 * N * D * H            # h0 forward, dW_proj
            + 6 * N * T * W * G      # x @ Wx, dA @ Wx^T, dWx
            + 6 * N * T * H * G      # h @ Wh, dA @ Wh^T, dWh
            + 6 * N * T * H * V)     # scores, dscores @ W_vocab^T, dW_vocab


def engine_flops(captions, null_idx, D, W, H, V, **_):
    """Floating-point operations of the products the fused LSTM engine runs for one batch:
    packed rows only (each caption's steps), the embedding folded into the input projection.
    The engine's GEMM rate is counted on these, not on the dense formulation."""
    from fastrnn.captioning.engine import BatchPlan
    plan = BatchPlan(captions, null_idx)
    G, R, M = 4 * H, plan.rows, len(plan.targets)
    n0 = int(plan.active[0]) if R else 0
    return (4 * n0 * D * H           # h0, dW_proj
            + 6 * V * W * G          # E = W_embed @ Wx, dWx, dW_embed
            + 6 * R * H * G          # h @ Wh, dA @ Wh^T, dWh
            + 6 * M * H * V)         # scores, dW_vocab, dscores @ W_vocab^T


# ------------------------------------------------------------------------ data

# COCO-like caption lengths in words (without <START>/<END>): mean ~10.5, mostly 8-13.
_LENGTHS = np.arange(5, 16)
_LENGTH_P = np.array([.005, .01, .03, .12, .20, .19, .15, .11, .08, .06, .045])


def vocabulary():
    """The 1,004-word vocabulary of the synthetic COCO generator (or a stand-in list)."""
    try:
        from fastrnn.captioning.data import synthetic
        words = list(synthetic.grammar().idx_to_word)
    except ImportError:
        words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"word{i}" for i in range(1000)]
    return {w: i for i, w in enumerate(words)}


def make_batches(cfg, seed, count=NUM_BATCHES):
    """``count`` minibatches (features float32 (N, D), captions int (N, T+1)) with COCO-like
    caption lengths: synthetic-COCO captions when the generator is there, else random words."""
    rng = np.random.default_rng(seed)
    N, T, D, V = cfg["N"], cfg["T"], cfg["D"], cfg["V"]
    batches = []
    for _ in range(count):
        captions = _synthetic_captions(N, rng)
        if captions is None or captions.shape[1] != T + 1:
            captions = _random_captions(N, T, V, rng)
        features = rng.standard_normal((N, D), dtype=np.float32)
        batches.append((features, captions.astype(np.int64)))
    return batches


def _synthetic_captions(N, rng):
    try:
        from fastrnn.captioning.data import synthetic
    except ImportError:
        return None
    g = synthetic.grammar()
    return synthetic.render_captions(synthetic.sample_scenes(N, rng, g), np.arange(N), rng, g)


def _random_captions(N, T, V, rng):
    """<START> words <END> <NULL>...; lengths from the COCO-like distribution, capped at T-1."""
    lengths = np.minimum(rng.choice(_LENGTHS, N, p=_LENGTH_P / _LENGTH_P.sum()), T - 1)
    captions = np.zeros((N, T + 1), dtype=np.int64)
    captions[:, 0] = 1
    for n, length in enumerate(lengths):
        captions[n, 1:length + 1] = rng.integers(4, V, length)
        captions[n, length + 1] = 2
    return captions


# ------------------------------------------------------------------ contenders

class FastrnnContender:
    """A ``CaptioningRNN`` trained with fastrnn's Adam on one backend: 'numpy' runs the
    reference path, a compiled backend the fused engine (``CaptioningRNN.loss`` dispatch).
    ``spec`` is a backend name, optionally with a GEMM provider: 'cython/numpy'."""

    def __init__(self, spec, cfg, word_to_idx, seed, profile=False, precision="fp32"):
        from fastrnn.captioning.model import CaptioningRNN
        backend, _, provider = spec.partition("/")
        self.backend, self.gemm, self.precision = backend, provider or None, precision
        self.name = "numpy reference" if backend == "numpy" else f"fastrnn {backend}"
        if self.gemm:
            self.name += f" ({self.gemm} gemm)"
        if precision != "fp32":
            self.name += f" {precision}"
        self.model = CaptioningRNN(word_to_idx, input_dim=cfg["D"], wordvec_dim=cfg["W"],
                                   hidden_dim=cfg["H"], cell_type="lstm", dtype=np.float32,
                                   seed=seed)
        self.configs = {k: {"learning_rate": LEARNING_RATE} for k in self.model.params}
        self.timings = {} if profile and backend != "numpy" else None

    def step(self, features, captions):
        with fastrnn.use_backend(self.backend), gemm.use_provider(self.gemm), \
                fastrnn.use_precision(self.precision):
            if self.timings is not None:   # same path as model.loss, with a phase breakdown
                from fastrnn.captioning import engine
                loss, grads = engine.captioning_loss(
                    self.model.params, features, captions, null_idx=self.model._null,
                    cell_type="lstm", timings=self.timings)
            else:
                loss, grads = self.model.loss(features, captions)
            # As the solver does: the backend's fused in-place Adam (the reference's is
            # the NumPy kernel); the contender owns its weights, so in place is safe.
            t0 = time.perf_counter()
            for k, w in self.model.params.items():
                optim.adam_in_place(w, grads[k], self.configs[k])
        if self.timings is not None:
            self.timings["adam update"] = self.timings.get("adam update", 0.0) + \
                time.perf_counter() - t0
        return float(loss)


class TorchContender:
    """The PyTorch baseline, starting from the same weights as the fastrnn contenders."""

    def __init__(self, packed, cfg, word_to_idx, seed, profile=False, precision="fp32"):
        from fastrnn.captioning.model import CaptioningRNN
        from fastrnn.captioning.torch_baseline import TorchCaptioningLSTM, TorchTrainer
        self.name = ("pytorch packed" if packed else "pytorch") + \
            ("" if precision == "fp32" else f" {precision}")
        twin = CaptioningRNN(word_to_idx, input_dim=cfg["D"], wordvec_dim=cfg["W"],
                             hidden_dim=cfg["H"], cell_type="lstm", dtype=np.float32, seed=seed)
        model = TorchCaptioningLSTM(cfg["V"], cfg["D"], cfg["W"], cfg["H"],
                                    null_idx=twin._null, packed=packed)
        model.load_params(twin.params)
        self.trainer = TorchTrainer(model, LEARNING_RATE, bf16=precision == "bf16")
        self.timings = None

    def step(self, features, captions):
        return self.trainer.step(features, captions)


def make_contender(name, cfg, word_to_idx, seed, profile=False, precision="fp32"):
    if name in TORCH_CONTENDERS:
        return TorchContender(name == "torch-packed", cfg, word_to_idx, seed, profile, precision)
    return FastrnnContender(name, cfg, word_to_idx, seed, profile, precision)


def contender_runs(names, precisions):
    """(contender, precision) pairs to run: every contender in each precision, the
    NumPy reference in fp32 only (mixed precision exists on the fused path)."""
    return [(n, p) for p in precisions for n in names if p == "fp32" or n != "numpy"]


def available_contenders():
    """Every contender this install can run, in table order."""
    names = ["numpy"] + [b for b in fastrnn.available_backends() if b != "numpy"]
    try:
        import torch  # noqa: F401
        names += list(TORCH_CONTENDERS)
    except ImportError:
        pass
    return names


# ------------------------------------------------------------------ measuring

def measure_sgemm(n, provider="numpy"):
    """GFLOP/s of one float32 (n x n) @ (n x n) product through a fastrnn GEMM provider
    ('numpy': NumPy's BLAS)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    mm = gemm.gemm_provider(provider).mm
    t0 = time.perf_counter()
    mm(a, b, out=out)
    return 2 * n ** 3 / (time.perf_counter() - t0) / 1e9


def measure_bf16_gemm(n, provider):
    """GFLOP/s of one (n x n) @ (n x n) product of bf16 operands (cast beforehand) through
    a bf16 provider ('torch': ``torch.mm`` on bfloat16 tensors, as autocast runs it)."""
    rng = np.random.default_rng(0)
    p = gemm.bf16_provider(provider)
    a = p.cast(rng.standard_normal((n, n), dtype=np.float32))
    b = p.cast(rng.standard_normal((n, n), dtype=np.float32))
    out = np.empty((n, n), dtype=np.float32)
    t0 = time.perf_counter()
    p.mm(a, b, out=out)
    return 2 * n ** 3 / (time.perf_counter() - t0) / 1e9


def bf16_gemm_providers(precisions, names):
    """Whose bf16 rate the header reports: fastrnn's default bf16 provider, and
    ``torch.mm`` when a PyTorch contender runs in bf16."""
    if "bf16" not in precisions:
        return []
    chosen = gemm.auto_bf16_choice() if gemm.default_bf16_provider() == "auto" \
        else gemm.default_bf16_provider()
    extra = ["torch"] if any(n in TORCH_CONTENDERS for n in names) and chosen != "torch" else []
    return [chosen] + extra


def sgemm_providers():
    """Whose sgemm rate the header reports: NumPy's BLAS, and oneDNN when it can run."""
    return ["numpy"] + (["onednn"] if gemm.gemm_provider("auto").uses == "onednn" else [])


def run_round_robin(contenders, batches, iters, warmup, sgemm_n, progress=True, bf16_gemms=()):
    """Time ``warmup + iters`` iterations of every contender, taking turns
    (``fastrnn.bench.timer``); round r trains every contender on minibatch r % len(batches).

    Returns per-contender lists of seconds for the timed iterations, the first-iteration
    losses, and per GEMM provider the sgemm GFLOP/s measured once per timed round (bf16
    providers, from ``bf16_gemms``, keyed 'bf16 NAME').
    """
    from fastrnn.bench.timer import time_interleaved
    rate = {p: (lambda n, p=p: measure_sgemm(n, p)) for p in sgemm_providers()}
    rate.update({f"bf16 {p}": (lambda n, p=p: measure_bf16_gemm(n, p)) for p in bf16_gemms})
    for measure in rate.values():
        measure(min(sgemm_n, 256))  # warm the thread pools
    first_loss = {}

    def check(name, r, loss):
        if not np.isfinite(loss):
            raise RuntimeError(f"{name}: loss is {loss} at iteration {r}")
        first_loss.setdefault(name, loss)

    timing = time_interleaved(
        {c.name: c.step for c in contenders}, iters, warmup=warmup,
        round_args=lambda r: batches[r % len(batches)], on_result=check,
        reference={p: (lambda measure=measure: measure(sgemm_n)) for p, measure in rate.items()},
        progress=progress, desc="fastrnn-bench")
    return timing.seconds, first_loss, timing.reference


_PROBE = """
import json, sys
from fastrnn.bench import training as bench
spec = json.loads(sys.argv[1])
print(json.dumps(bench._memory_probe(**spec)))
"""


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_probe(name, preset, seed, iters, precision="fp32"):
    """Run one contender alone (called in a fresh process): peak RSS, and RSS after each
    iteration (growth across iterations shows up there)."""
    warnings.filterwarnings("ignore", message="fastrnn precision 'bf16'")
    cfg = PRESETS[preset]
    word_to_idx = vocabulary()
    batches = make_batches(cfg, seed)
    contender = make_contender(name, cfg, word_to_idx, seed, precision=precision)
    before = _rss_bytes()
    after = []
    for i in range(iters):
        contender.step(*batches[i % len(batches)])
        after.append(_rss_bytes())
    return {"rss_before_bytes": before, "rss_after_bytes": after, "peak_rss_bytes": _peak_rss_bytes()}


def _peak_rss_bytes():
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux carries that
    over from the parent across fork + exec, so a child would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM line in /proc/self/status")


def measure_memory(name, preset, seed, iters=2, threads=None, precision="fp32"):
    """``_memory_probe`` in a fresh Python process (so nothing else inflates its peak)."""
    env = dict(os.environ)
    if threads:
        env[config.NUM_THREADS] = str(threads)
        env["OMP_NUM_THREADS"] = str(threads)
    spec = json.dumps({"name": name, "preset": preset, "seed": seed, "iters": iters,
                       "precision": precision})
    proc = subprocess.run([sys.executable, "-c", _PROBE, spec], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe of {name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ reporting

def summarise(times, first_loss, sgemm, memory, cfg, engine_flop=None):
    """One row per contender: median seconds, speed-ups, dense GFLOP/s, the fused engine's
    GFLOP/s on the products it runs (``engine_flop`` per iteration, fastrnn rows only),
    memory, projection."""
    flops = dense_flops(**cfg)
    medians = {name: float(np.median(ts)) for name, ts in times.items()}
    # The ratio column compares with the fastest PyTorch variant of the run.
    torch_times = [m for name, m in medians.items() if name.startswith("pytorch")]
    ref, torch_ = medians.get("numpy reference"), min(torch_times, default=None)
    rows = []
    for name, ts in times.items():
        m = medians[name]
        mem = memory.get(name)
        rows.append({
            "contender": name,
            "seconds": ts,
            "median_s": m,
            "min_s": float(np.min(ts)),
            "speedup_vs_pytorch": torch_ / m if torch_ else None,
            "speedup_vs_reference": ref / m if ref else None,
            "dense_gflops": flops / m / 1e9,
            "engine_gflops": engine_flop / m / 1e9
            if engine_flop and name.startswith("fastrnn") else None,
            "first_loss": first_loss[name],
            "peak_rss_bytes": mem["peak_rss_bytes"] if mem else None,
            "rss_growth_bytes": (mem["rss_after_bytes"][-1] - mem["rss_after_bytes"][0])
            if mem else None,
            "projected_full_run_hours": m * FULL_RUN_ITERATIONS / 3600,
        })
    by_provider = {p: float(np.median(v)) for p, v in sgemm.items()}
    fp32 = {p: v for p, v in by_provider.items() if not p.startswith("bf16 ")}
    bf16 = {p[5:]: v for p, v in by_provider.items() if p.startswith("bf16 ")}
    return {"dense_flop_per_iteration": flops, "engine_flop_per_iteration": engine_flop,
            "sgemm_gflops_median": by_provider["numpy"], "sgemm_gflops": sgemm["numpy"],
            "sgemm_gflops_median_by_provider": fp32,
            "sgemm_gflops_best": max(fp32.values()),
            "bf16_gemm_gflops_median_by_provider": bf16,
            "fastest_pytorch_s": torch_, "rows": rows}


COLUMNS = ("contender", "s/iter (median)", "x vs fastest pytorch", "x vs reference", "dense GFLOP/s",
           "engine GFLOP/s", "peak RSS", "RSS growth", "1,170 iters", "first loss")


def format_table(summary):
    def fmt(x, spec, unit=""):
        return "-" if x is None else f"{x:{spec}}{unit}"

    lines = [COLUMNS]
    for r in summary["rows"]:
        lines.append((
            r["contender"],
            f"{r['median_s']:.3f}",
            fmt(r["speedup_vs_pytorch"], ".2f", "x"),
            fmt(r["speedup_vs_reference"], ".2f", "x"),
            _number(r["dense_gflops"]),
            "-" if r.get("engine_gflops") is None else _number(r["engine_gflops"]),
            fmt(None if r["peak_rss_bytes"] is None else r["peak_rss_bytes"] / 2 ** 30, ".2f",
                " GiB"),
            fmt(None if r["rss_growth_bytes"] is None else r["rss_growth_bytes"] / 2 ** 20,
                "+.0f", " MiB"),
            f"{r['projected_full_run_hours']:.2f} h",
            f"{r['first_loss']:.4f}",
        ))
    widths = [max(len(row[i]) for row in lines) for i in range(len(COLUMNS))]
    out = []
    for k, row in enumerate(lines):
        out.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                             for i, (cell, w) in enumerate(zip(row, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _number(x):
    """Three significant figures at most, without exponent: 2061, 3.52, 0.0412."""
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def format_header(preset, cfg, summary, threads, load):
    shape = ", ".join(f"{k}={cfg[k]}" for k in "NTDWHV")
    precisions = summary.get("precisions", ["fp32"])
    bf16 = summary.get("bf16_gemm_gflops_median_by_provider") or {}
    bf16_line = ""
    if "bf16" in precisions:
        bf16_line = (f"measured bf16 GEMM ({cfg['sgemm']}^3, bf16 operands, float32 "
                     f"accumulation): " + ", ".join(
                         f"{_number(v)} GFLOP/s ({_BF16_LABEL.get(p, p)})" for p, v in bf16.items())
                     + f"; {precision_mod.describe_capability()}; fastrnn's bf16 provider: "
                     f"{gemm.bf16_provider().name} ({gemm.bf16_provider().uses})\n")
    return (f"fastrnn-bench: preset {preset} ({shape}), LSTM, float32 master weights, "
            f"precision {', '.join(precisions)}, Adam; threads {threads or 'default'}\n"
            f"dense work per iteration: {_number(summary['dense_flop_per_iteration'] / 1e9)} GFLOP"
            + (f" (the fused engine runs {_number(summary['engine_flop_per_iteration'] / 1e9)} "
               f"GFLOP of products: packed rows only)"
               if summary.get("engine_flop_per_iteration") else "") + "; "
            f"measured sgemm ({cfg['sgemm']}^3 float32 matmul, median of rounds): "
            + ", ".join(f"{_number(v)} GFLOP/s ({_SGEMM_LABEL.get(p, p)})"
                        for p, v in summary["sgemm_gflops_median_by_provider"].items())
            + f"; fastrnn's default GEMM provider: {gemm.describe()}\n" + bf16_line +
            f"load average (1 min) at start / end: {load[0]:.2f} / {load[1]:.2f} "
            f"on {os.cpu_count()} CPUs (other processes add noise to every column)")


_SGEMM_LABEL = {"numpy": "NumPy's BLAS", "onednn": "oneDNN in PyTorch"}
_BF16_LABEL = {"emulated": "fastrnn emulated: float32 GEMM of bf16 values",
               "mkl": "MKL cblas_gemm_bf16bf16f32", "torch": "torch.mm bf16, as autocast"}


def format_profile(contenders, iters_total):
    lines = []
    for c in contenders:
        if c.timings:
            total = sum(c.timings.values())
            lines.append(f"{c.name}: seconds per iteration by phase")
            for phase, s in c.timings.items():
                lines.append(f"  {phase:34s} {s / iters_total:8.3f}  {100 * s / total:5.1f}%")
    return "\n".join(lines)


# ------------------------------------------------------------------------ CLI


def _set_threads(n):
    if n is None:
        return
    from fastrnn import threads
    threads.set_num_threads(n)
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def run(preset="full", iters=None, warmup=None, threads=None, contenders=None, seed=0,
        memory=True, profile=False, progress=True, precisions=("fp32",)):
    """Run the benchmark; returns the results dict that ``--json`` writes."""
    cfg = PRESETS[preset]
    iters = cfg["iters"] if iters is None else iters
    warmup = cfg["warmup"] if warmup is None else warmup
    names = available_contenders() if contenders is None else contenders
    runs = contender_runs(names, precisions)
    _set_threads(threads)
    load_start = os.getloadavg()[0]
    word_to_idx = vocabulary()
    batches = make_batches(cfg, seed)
    objs = [make_contender(n, cfg, word_to_idx, seed, profile, p) for n, p in runs]
    with _bf16_warning_once():
        times, first_loss, sgemm = run_round_robin(objs, batches, iters, warmup, cfg["sgemm"],
                                                   progress, bf16_gemm_providers(precisions, names))
    mem = {}
    if memory:
        for (n, p), c in zip(runs, objs):
            mem[c.name] = measure_memory(n, preset, seed, threads=threads, precision=p)
    load_end = os.getloadavg()[0]
    null = word_to_idx["<NULL>"]
    engine_flop = float(np.mean([engine_flops(c, null, **cfg) for _, c in batches]))
    summary = summarise(times, first_loss, sgemm, mem, cfg, engine_flop)
    result = {
        "preset": preset, "config": {k: cfg[k] for k in "NTDWHV"}, "cell_type": "lstm",
        "dtype": "float32", "precisions": list(precisions),
        "bf16_capability": list(precision_mod.bf16_capability()),
        "optimizer": f"adam lr={LEARNING_RATE}", "iters": iters,
        "warmup": warmup, "threads": threads, "seed": seed, "cpu_count": os.cpu_count(),
        "load_average_start": load_start, "load_average_end": load_end,
        "full_run_iterations": FULL_RUN_ITERATIONS, **summary,
    }
    result["_profile"] = format_profile(objs, iters + warmup) if profile else ""
    return result


@contextlib.contextmanager
def _bf16_warning_once():
    """The header says what bf16 hardware there is: no RuntimeWarning about it as well."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fastrnn precision 'bf16'")
        yield
