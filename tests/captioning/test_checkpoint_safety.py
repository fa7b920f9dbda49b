"""Checkpoints hold only finite state, survive a full disk and clean up after kill -9;
resuming can replace the learning rate; the thread count travels with the checkpoint."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastrnn import threads
from fastrnn.captioning import checkpoint
from fastrnn.captioning.model import CaptioningRNN
from fastrnn.captioning.solver import CaptioningSolver, TrainingDiverged


def toy_data(num_images=12, num_captions=40, dim=8, vocab=12, seed=0):
    rng = np.random.default_rng(seed)
    words = ["<NULL>", "<START>", "<END>"] + [f"w{i}" for i in range(vocab - 3)]
    captions = np.zeros((num_captions, 8), dtype=np.int32)
    captions[:, 0], captions[:, 1:6], captions[:, 6] = 1, rng.integers(3, vocab, (num_captions, 5)), 2
    return {"train_captions": captions, "train_image_idxs": rng.integers(0, num_images, num_captions),
            "train_features": rng.standard_normal((num_images, dim)).astype(np.float32),
            "train_urls": np.array([f"img{i}" for i in range(num_images)]),
            "idx_to_word": words, "word_to_idx": {w: i for i, w in enumerate(words)}}


def toy_solver(data, **kwargs):
    model = CaptioningRNN(data["word_to_idx"], input_dim=8, wordvec_dim=8, hidden_dim=8,
                          cell_type="lstm", seed=0)
    settings = dict(update_rule="sgd", optim_config={"learning_rate": 1e-2}, batch_size=40,
                    num_epochs=1, verbose=False, progress=False)
    settings.update(kwargs)
    return CaptioningSolver(model, data, **settings)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def rewrite_meta(src, dst, change):
    """Copy a checkpoint, applying change(meta dict) to its JSON metadata."""
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(dst, **arrays)


# ------------------------------------------------------------ finite state only

def test_save_checkpoint_refuses_non_finite_state_and_keeps_the_file(tmp_path):
    solver = toy_solver(toy_data(), checkpoint_dir=tmp_path).train()
    path = tmp_path / "checkpoint.npz"
    before = digest(path)
    for poison in ("weight", "moment", "learning_rate"):
        model = checkpoint.load_model(path)
        configs = {k: {"learning_rate": 1e-2} for k in model.params}
        if poison == "weight":
            model.params["b_vocab"][0] = np.inf
        elif poison == "moment":
            configs["Wx"]["m"] = np.full(model.params["Wx"].shape, np.nan, np.float32)
        else:
            configs["Wh"]["learning_rate"] = float("nan")
        with pytest.raises(checkpoint.NonFiniteState, match="non-finite"):
            checkpoint.save_checkpoint(path, model, optim_configs=configs)
        assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]
    assert solver.iteration == 1


def test_divergence_in_the_update_never_reaches_the_checkpoint(tmp_path):
    """sgd with lr 1e300, one iteration per epoch: the update overflows b_vocab; the epoch-end
    checkpoint is refused and names the last good one, which stays as it was."""
    data = toy_data()
    toy_solver(data, checkpoint_dir=tmp_path).train()
    path = tmp_path / "checkpoint.npz"
    before = digest(path)
    solver = CaptioningSolver.resume(path, data, num_epochs=3, learning_rate=1e300,
                                     progress=False)
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(TrainingDiverged, match="last good checkpoint .*checkpoint.npz is kept"):
        solver.train()
    assert digest(path) == before
    saved = checkpoint.read_checkpoint(path)
    assert checkpoint.nonfinite_state(saved["params"], saved["optim_configs"]) == []
    # without any earlier checkpoint the message says none was written
    fresh = toy_solver(data, checkpoint_dir=tmp_path / "fresh",
                       optim_config={"learning_rate": 1e300})
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        fresh.train()
    assert not (tmp_path / "fresh" / "checkpoint.npz").exists()


@pytest.mark.parametrize("kwargs, name", [
    ({"lr_decay": float("nan")}, "lr_decay"), ({"lr_decay": -0.5}, "lr_decay"),
    ({"lr_decay": 0.0}, "lr_decay"), ({"lr_decay": float("inf")}, "lr_decay"),
    ({"batch_size": 0}, "batch_size"), ({"num_epochs": -1}, "num_epochs"),
    ({"print_every": 0}, "print_every"),
])
def test_solver_rejects_bad_settings_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        toy_solver(toy_data(), **kwargs)


def test_resume_learning_rate_override(tmp_path):
    data = toy_data()
    toy_solver(data, checkpoint_dir=tmp_path, lr_decay=0.5).train()
    path = tmp_path / "checkpoint.npz"
    kept = CaptioningSolver.resume(path, data)
    assert kept.learning_rate == pytest.approx(5e-3)          # 1e-2 after one decay
    replaced = CaptioningSolver.resume(path, data, learning_rate=1e-4)
    assert all(c["learning_rate"] == 1e-4 for c in replaced.optim_configs.values())
    for bad in (float("nan"), -1.0, 0.0):
        with pytest.raises(ValueError, match="learning_rate"):
            CaptioningSolver.resume(path, data, learning_rate=bad)
    # an old checkpoint that stored a NaN rate: resuming needs a new one
    nan_path = tmp_path / "nan_lr.npz"
    rewrite_meta(path, nan_path, lambda meta: [c.update(learning_rate=float("nan"))
                                               for c in meta["optim"].values()])
    with pytest.raises(checkpoint.CheckpointError, match="learning rate nan"):
        CaptioningSolver.resume(nan_path, data)
    assert CaptioningSolver.resume(nan_path, data, learning_rate=1e-3).learning_rate == 1e-3


def test_checkpoint_stores_the_thread_count(tmp_path):
    data = toy_data()
    toy_solver(data, checkpoint_dir=tmp_path).train()
    meta = checkpoint.read_meta(tmp_path / "checkpoint.npz")
    assert meta["solver"]["num_threads"] == threads.get_num_threads()
    resumed = CaptioningSolver.resume(tmp_path / "checkpoint.npz", data)
    assert resumed.checkpoint_num_threads == threads.get_num_threads()


# ------------------------------------------------------------------ full disk

def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    data = toy_data()
    solver = toy_solver(data, checkpoint_dir=tmp_path).train()
    path = tmp_path / "checkpoint.npz"
    before = digest(path)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    solver.num_epochs = 2
    with pytest.raises(checkpoint.CheckpointWriteError,
                       match="No space left on device; the previous checkpoint is kept") as info:
        solver.train()
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert digest(path) == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.npz"]


# ------------------------------------------------------- orphaned temporary files

def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    owner = checkpoint._owner()
    host = owner.split("@", 1)[1]
    dead = f".tmp-checkpoint.npz-{dead_pid()}@{host}-abc123"
    live = f".tmp-checkpoint.npz-{os.getpid()}@{host}-def456"
    other_host = f".tmp-checkpoint.npz-{dead_pid()}@elsewhere_{host}-ghi789"
    legacy = ".tmp-checkpoint.npz-k2j4h5g6"           # the naming before pids were recorded
    other_file = ".tmp-metrics.json-1@x-aaa"
    for name in (dead, live, other_host, legacy, other_file):
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(tmp_path / legacy, (old, old))
    toy_solver(toy_data(), checkpoint_dir=tmp_path).train()
    assert sorted(os.listdir(tmp_path)) == sorted(["checkpoint.npz", live, other_host,
                                                   other_file])


KILLED_WRITER = """
import sys, time
from fastrnn.captioning import checkpoint
def write(f):
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
checkpoint.write_atomically(sys.argv[1], write)
"""


def test_kill_9_during_a_write_leaves_a_file_the_next_write_removes(tmp_path):
    path = tmp_path / "checkpoint.npz"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    orphans = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-checkpoint.npz-")]
    assert len(orphans) == 1 and f"-{proc.pid}@" in orphans[0]
    assert not path.exists()
    checkpoint.write_atomically(path, lambda f: f.write(b"whole"))
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    assert path.read_bytes() == b"whole"
