"""Does bf16 train as well as fp32? Two checks, reported, not timed.

    python benchmarks/bf16_convergence.py default [-- extra fastrnn-train flags]
    python benchmarks/bf16_convergence.py fullscale [--iters 50] [--backend cython]

default    runs the default ``fastrnn-train`` preset twice, ``--precision fp32`` and
           ``--precision bf16``, same seed, and compares the val reference BLEU
           (bf16 within 0.01 of fp32) and the final training loss (within 2%).
fullscale  trains the captioning LSTM at the full-scale shape (N=1024, T=16, D=512,
           W=256, H=2048, V=1004, Adam lr 1e-4) for ``--iters`` iterations from the
           same weights on the same minibatches in both precisions, and checks that
           the bf16 loss stays within 1% of the fp32 loss at every iteration.

Exit status 0 when every check passes, 1 otherwise.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from fastrnn.cli._common import Parser, positive_int


def default_preset(extra):
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for prec in ("fp32", "bf16"):
            out = os.path.join(tmp, prec)
            cmd = [sys.executable, "-m", "fastrnn.cli.train", "--precision", prec, "--out", out,
                   "--no-progress", *extra]
            print("$", " ".join(cmd[1:]), flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(os.path.join(out, "metrics.json")) as f:
                m = json.load(f)
            with np.load(os.path.join(out, "checkpoint.npz")) as ckpt:
                history = ckpt["history/loss_history"]
            with open(os.path.join(out, "run.json")) as f:
                epochs = json.load(f)["settings"]["num_epochs"]
            last_epoch = history[-max(len(history) // epochs, 1):]
            results[prec] = {"final_loss": m["final_loss"],
                             "last_epoch_mean_loss": float(np.mean(last_epoch)),
                             "val_reference_bleu": m["val"]["reference_bleu"],
                             "iterations": m["iterations"], "seconds": time.perf_counter() - t0}
            print(f"  {prec}: {results[prec]}", flush=True)
    a, b = results["fp32"], results["bf16"]
    d_bleu = b["val_reference_bleu"] - a["val_reference_bleu"]
    d_loss = (b["final_loss"] - a["final_loss"]) / a["final_loss"]
    ok = abs(d_bleu) <= 0.01 and abs(d_loss) <= 0.02
    print(f"val reference BLEU: fp32 {a['val_reference_bleu']:.4f}, bf16 "
          f"{b['val_reference_bleu']:.4f} (difference {d_bleu:+.4f}, limit 0.01)")
    print(f"final training loss: fp32 {a['final_loss']:.4f}, bf16 {b['final_loss']:.4f} "
          f"(difference {100 * d_loss:+.2f}%, limit 2%)")
    d_mean = (b["last_epoch_mean_loss"] - a["last_epoch_mean_loss"]) / a["last_epoch_mean_loss"]
    print(f"mean training loss over the last epoch (less noisy than the last minibatch's): "
          f"fp32 {a['last_epoch_mean_loss']:.4f}, bf16 {b['last_epoch_mean_loss']:.4f} "
          f"(difference {100 * d_mean:+.2f}%; reported, not judged)")
    print("PASS" if ok else "FAIL")
    return ok


def fullscale(iters, backend, seed=0):
    from fastrnn.bench import training as bench
    warnings.filterwarnings("ignore", message="fastrnn precision 'bf16'")
    cfg = bench.PRESETS["full"]
    words = bench.vocabulary()
    batches = bench.make_batches(cfg, seed)
    runs = {p: bench.FastrnnContender(backend, cfg, words, seed, precision=p)
            for p in ("fp32", "bf16")}
    worst = 0.0
    print(f"{'iter':>4}  {'fp32 loss':>10}  {'bf16 loss':>10}  {'rel. diff':>9}")
    for i in range(iters):
        features, captions = batches[i % len(batches)]
        losses = {p: c.step(features, captions) for p, c in runs.items()}
        rel = (losses["bf16"] - losses["fp32"]) / losses["fp32"]
        worst = max(worst, abs(rel))
        print(f"{i + 1:4d}  {losses['fp32']:10.4f}  {losses['bf16']:10.4f}  {100 * rel:+8.3f}%",
              flush=True)
    ok = worst <= 0.01
    print(f"largest relative difference over {iters} iterations: {100 * worst:.3f}% (limit 1%)")
    print("PASS" if ok else "FAIL")
    return ok


def main(argv=None):
    parser = Parser(prog=os.path.basename(__file__), description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=("default", "fullscale"))
    parser.add_argument("--iters", type=positive_int, default=50, help="fullscale: iterations (50)")
    parser.add_argument("--backend", default="cython", help="fullscale: fastrnn backend")
    parser.add_argument("extra", nargs="*", help="default: more fastrnn-train flags (after --)")
    args = parser.parse_args(argv)
    ok = default_preset(args.extra) if args.check == "default" else \
        fullscale(args.iters, args.backend)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
