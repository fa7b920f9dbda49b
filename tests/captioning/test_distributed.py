"""Data-parallel training over torch.distributed (gloo) on loopback, launched with torchrun."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastrnn.captioning.distributed import shard_bounds

pytest.importorskip("torch.distributed")

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.mark.parametrize("batch_size, world_size", [(10, 2), (11, 2), (7, 3), (4, 4)])
def test_shards_are_disjoint_and_cover_the_batch(batch_size, world_size):
    bounds = [shard_bounds(batch_size, r, world_size) for r in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == batch_size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_a_batch_smaller_than_the_world_is_rejected():
    with pytest.raises(ValueError, match="batch_size 1 is smaller than the number of ranks 2"):
        shard_bounds(1, 0, 2)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc, *args, timeout=240):
    env = dict(os.environ, FASTRNN_NUM_THREADS="1", FASTRNN_DIST_TIMEOUT="30",
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(WORKER), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory):
    from fastrnn.captioning.data.synthetic import generate
    folder = tmp_path_factory.mktemp("coco") / "tiny"
    generate(folder, size="tiny", seed=0, progress=False)
    return folder


def run(nproc, data, out, epochs, *extra):
    proc = torchrun(nproc, data, out, epochs, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return np.load(out / "result.npz")


@pytest.mark.slow
def test_two_ranks_equal_one_rank_and_resume_with_another_world_size(tiny_coco, tmp_path):
    single = run(1, tiny_coco, tmp_path / "one", 3)
    double = run(2, tiny_coco, tmp_path / "two", 3)
    assert len(single["loss_history"]) == 12   # 200 captions / batch 50 * 3 epochs
    np.testing.assert_allclose(double["loss_history"], single["loss_history"], rtol=1e-5)
    for name in single.files:
        np.testing.assert_allclose(double[name], single[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)

    # two ranks train 2 epochs, one rank resumes their checkpoint for the third
    run(2, tiny_coco, tmp_path / "split", 2)
    resumed = run(1, tiny_coco, tmp_path / "split", 3, "--resume",
                  tmp_path / "split" / "checkpoint.npz")
    np.testing.assert_allclose(resumed["loss_history"], single["loss_history"], rtol=1e-5)


@pytest.mark.slow
def test_a_dead_rank_makes_the_others_fail_clearly(tiny_coco, tmp_path):
    # Ranks started by hand, not by torchrun: torchrun's agent would kill the
    # survivor itself; here only fastrnn's own error handling can stop it.
    port = free_port()
    ranks = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), FASTRNN_NUM_THREADS="1",
                   FASTRNN_DIST_TIMEOUT="30")
        ranks.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(tiny_coco), str(tmp_path), "3", "--die-at", "3"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    survivor_out, _ = ranks[0].communicate(timeout=120)
    ranks[1].communicate(timeout=60)
    assert ranks[1].returncode == 17
    assert ranks[0].returncode != 0
    assert "DistributedError" in survivor_out
    assert "all-reduce failed at iteration 3" in survivor_out
    assert not (tmp_path / "result.npz").exists()


@pytest.mark.slow
def test_fastrnn_train_under_torchrun(tiny_coco, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, FASTRNN_DIST_TIMEOUT="60")
    common = ["--data", str(tiny_coco), "--batch-size", "100", "--hidden-dim", "32",
              "--wordvec-dim", "16", "--eval-samples", "20", "--no-progress", "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "fastrnn.cli.train",
           "--distributed", "--num-epochs", "1", *common]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "data-parallel over 2 ranks" in proc.stdout
    assert proc.stdout.count("fastrnn-train: wrote") == 1      # rank 0 alone reports
    assert (out / "checkpoint.npz").exists() and (out / "metrics.json").exists()

    # the 2-rank checkpoint resumes in a single process
    resume = subprocess.run([sys.executable, "-m", "fastrnn.cli.train", "--resume",
                             str(out / "checkpoint.npz"), "--num-epochs", "2", "--eval-samples",
                             "0", "--no-progress"], capture_output=True, text=True, timeout=240)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert "resuming" in resume.stdout


@pytest.mark.slow
def test_bench_ranks_reports_matching_losses_and_identical_params(tmp_path, capsys):
    from fastrnn.cli import bench
    assert bench.main(["--preset", "tiny", "--ranks", "2", "--iters", "2", "--warmup", "1",
                       "--json", str(tmp_path / "scaling.json")]) == 0
    out = capsys.readouterr().out
    assert "correctness-under-load check" in out
    import json
    summary = json.loads((tmp_path / "scaling.json").read_text())
    assert summary["losses_match"] and summary["params_identical_across_ranks"]
    assert summary["max_rel_loss_difference"] < 1e-5
