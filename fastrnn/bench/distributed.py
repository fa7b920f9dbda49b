"""``fastrnn-bench --ranks N``: data-parallel scaling and correctness under load.

Runs the same training iterations (fused fast path, Adam, COCO-like batches of the
chosen preset) once with 1 rank and once with N ranks under ``torchrun`` on this
machine, each rank using cores / N threads, and reports seconds per iteration,
the speed-up, whether the N-rank losses match the 1-rank losses, and whether every
rank ends with bit-identical parameters.

On one machine the ranks share the same cores, so the ideal speed-up is 1.0 and
the run is a correctness-under-load check rather than a speed-up; across N
machines the same code scales with the added cores.
"""
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from fastrnn import config

RESULT_TAG = "FASTRNN_BENCH_RESULT "


def worker(preset, iters, warmup, seed):
    """One rank's part (run under torchrun): train and report timings and a checksum."""
    import torch
    import torch.distributed as dist

    from fastrnn import optim
    from fastrnn.bench.training import LEARNING_RATE, make_batches, vocabulary
    from fastrnn.captioning.distributed import DistributedContext, global_loss_and_grads
    from fastrnn.captioning.model import CaptioningRNN
    from fastrnn.captioning.presets import BENCHMARK_SHAPES

    cfg = BENCHMARK_SHAPES[preset]
    context = DistributedContext()
    model = CaptioningRNN(vocabulary(), input_dim=cfg["D"], wordvec_dim=cfg["W"],
                          hidden_dim=cfg["H"], cell_type="lstm", dtype=np.float32, seed=seed)
    configs = {k: {"learning_rate": LEARNING_RATE} for k in model.params}
    batches = make_batches(cfg, seed)
    times, losses = [], []
    for it in range(warmup + iters):
        features, captions = batches[it % len(batches)]
        context.barrier()
        start = time.perf_counter()
        loss, grads = global_loss_and_grads(context, model, features, captions, iteration=it + 1)
        for k in model.params:
            model.params[k], configs[k] = optim.adam_in_place(model.params[k], grads[k], configs[k])
        if it >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss)

    checksum = sum(float(p.astype(np.float64).sum()) for p in model.params.values())
    spread = torch.tensor([checksum, -checksum], dtype=torch.float64)
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)     # max and -min of the checksums
    if context.is_main:
        print(RESULT_TAG + json.dumps({
            "ranks": context.world_size, "times": times, "losses": losses,
            "params_identical": bool(spread[0].item() == -spread[1].item()),
            "threads": config.get(config.NUM_THREADS),
            "backend": __import__("fastrnn").get_backend()}))
    context.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(ranks, preset, iters, warmup, seed, threads_per_rank, timeout=3600):
    """Run ``worker`` on ``ranks`` local processes under torchrun; rank 0's result dict."""
    env = dict(os.environ, **{config.NUM_THREADS: str(threads_per_rank)})
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m",
           "fastrnn.bench.distributed", preset, str(iters), str(warmup), str(seed)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"fastrnn-bench --ranks {ranks}: the ranks failed (exit {proc.returncode}):"
                       f"\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def scaling_report(ranks, preset, iters, warmup, seed, cores=None):
    """Measure 1 rank and ``ranks`` ranks; returns (summary dict, printable text)."""
    cores = cores or os.cpu_count() or 1
    one = launch(1, preset, iters, warmup, seed, cores)
    many = launch(ranks, preset, iters, warmup, seed, max(1, cores // ranks))
    t1, tn = float(np.median(one["times"])), float(np.median(many["times"]))
    loss_diff = float(np.max(np.abs(np.subtract(many["losses"], one["losses"]))
                             / np.abs(one["losses"])))
    summary = {
        "preset": preset, "cores": cores, "ranks": ranks, "backend": many["backend"],
        "s_per_iter_1_rank": t1, f"s_per_iter_{ranks}_ranks": tn, "speedup": t1 / tn,
        "ideal_speedup_on_this_machine": 1.0, "max_rel_loss_difference": loss_diff,
        "losses_match": loss_diff < 1e-5, "params_identical_across_ranks":
            many["params_identical"],
    }
    text = "\n".join([
        f"fastrnn-bench --ranks {ranks}: preset {preset}, backend {many['backend']}, "
        f"{cores} cores, {iters} timed iterations after {warmup} warm-up",
        f"  {'ranks':>5}  {'threads/rank':>12}  {'s/iter (median)':>15}",
        f"  {1:>5}  {cores:>12}  {t1:>15.4f}",
        f"  {ranks:>5}  {max(1, cores // ranks):>12}  {tn:>15.4f}",
        f"  speed-up {t1 / tn:.2f}x; the ideal on one machine is 1.0x since the ranks share "
        f"its {cores} cores (above 1.0x: the single process lost more to thread "
        f"synchronisation than the ranks lost to the all-reduce)",
        f"  losses vs 1 rank: max relative difference {loss_diff:.1e} "
        f"({'match' if summary['losses_match'] else 'DIFFER'}); parameters identical on "
        f"every rank: {'yes' if many['params_identical'] else 'NO'}",
        "  On one machine this is a correctness-under-load check, not a speed-up; across "
        "machines (torchrun --nnodes) the added cores give the speed-up.",
    ])
    return summary, text


if __name__ == "__main__":
    preset, iters, warmup, seed = sys.argv[1], *map(int, sys.argv[2:5])
    worker(preset, iters, warmup, seed)
