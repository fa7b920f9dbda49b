"""Every bad invocation of every console script ends in one line `fastrnn-X: error: ...`
naming the flag or file, exit status 2 (usage) or 1 (runtime), never a traceback.

The commands run in-process through their main(argv); each case fails before any heavy
work (output locations and checkpoints are checked first), so the whole file is quick.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.captioning.data import synthetic
from fastrnn.cli import bench, cola, data, evaluate, train

PROGS = {train: "fastrnn-train", evaluate: "fastrnn-eval", data: "fastrnn-data",
         cola: "fastrnn-cola", bench: "fastrnn-bench"}
TINY_MODEL = ["--hidden-dim", "16", "--wordvec-dim", "8", "--batch-size", "2000",
              "--eval-samples", "0", "--no-progress", "--update-rule", "sgd"]
UNWRITABLE = "/sys/fastrnn-test"   # read-only even for root


def sys_is_read_only():
    try:
        os.makedirs(UNWRITABLE)
    except OSError:
        return True
    os.rmdir(UNWRITABLE)
    return False


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny synthetic folder, a one-iteration checkpoint and damaged copies of both."""
    root = tmp_path_factory.mktemp("cli_errors")
    tiny = root / "tiny"
    synthetic.generate(tiny, size="tiny", seed=0, progress=False)
    assert train.main(["--data", str(tiny), "--num-epochs", "1", "--out", str(root / "run"),
                       *TINY_MODEL]) == 0
    ckpt = root / "run" / "checkpoint.npz"
    raw = ckpt.read_bytes()
    (root / "truncated.npz").write_bytes(raw[:len(raw) // 3])
    (root / "empty.npz").write_bytes(b"")
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    (root / "crc.npz").write_bytes(bytes(flipped))
    with np.load(ckpt) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    np.savez(root / "no_history.npz", **{k: v for k, v in arrays.items() if k != "history/iter_times"})
    np.savez(root / "no_param.npz", **{k: v for k, v in arrays.items() if k != "param/Wx"})
    np.savez(root / "version.npz", **{**arrays, "meta": np.array(json.dumps({**meta, "version": 99}))})
    np.savez(root / "no_solver.npz", **{**arrays, "meta": np.array(json.dumps(
        {**meta, "solver": {"settings": meta["solver"]["settings"]}}))})
    for name, text in (("bad_json", "{not json"), ("bad_type", json.dumps({"data": 5}))):
        (root / name).mkdir()
        (root / name / "checkpoint.npz").write_bytes(raw)
        (root / name / "run.json").write_text(text)
    for name, h5 in (("h5_truncated", "coco2014_captions.h5"),
                     ("h5_not_hdf5", "train2014_vgg16_fc7_pca.h5")):
        folder = root / name
        folder.mkdir()
        for f in tiny.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        (folder / h5).write_bytes((tiny / h5).read_bytes()[:400] if name == "h5_truncated"
                                  else b"plain text, not HDF5")
    (root / "a_file").write_text("not a folder")
    return root


def D(name):
    """A path inside the files fixture, filled in at run time."""
    return "{root}/" + name


CASES = [
    # (command, argv, exit status, words the message must contain)
    (train, ["--resume", D("truncated.npz")], 2, ["--resume", "truncated.npz"]),
    (train, ["--resume", D("empty.npz")], 2, ["--resume", "empty.npz"]),
    (train, ["--resume", D("crc.npz"), "--no-progress"], 2, ["crc.npz", "CRC"]),
    (train, ["--resume", D("no_history.npz"), "--no-progress"], 2, ["no_history.npz", "missing"]),
    (train, ["--resume", D("no_param.npz"), "--no-progress"], 2, ["no_param.npz", "Wx"]),
    (train, ["--resume", D("version.npz")], 2, ["version.npz", "version 99"]),
    (train, ["--resume", D("no_solver.npz"), "--no-progress"], 2, ["no_solver.npz", "solver"]),
    (train, ["--resume", D("missing.npz")], 2, ["missing.npz", "does not exist"]),
    (train, ["--resume", D("bad_json/checkpoint.npz")], 2, ["bad_json/run.json"]),
    (train, ["--resume", D("bad_type/checkpoint.npz")], 2, ["bad_type/run.json", "'data'"]),
    (train, ["--data", D("h5_truncated"), "--out", D("o1")], 2, ["coco2014_captions.h5", "HDF5"]),
    (train, ["--data", D("h5_not_hdf5"), "--out", D("o2")], 2,
     ["train2014_vgg16_fc7_pca.h5", "HDF5"]),
    (train, ["--out", D("a_file")], 2, ["--out", "a_file", "is a file"]),
    (train, ["--out", D("a_file/below")], 2, ["--out", "a_file"]),
    (train, ["--out", UNWRITABLE], 2, ["--out", UNWRITABLE, "not writable"]),
    (train, ["--resume", D("run/checkpoint.npz"), "--out", UNWRITABLE], 2, ["--out"]),
    (train, ["--lr", "nan"], 2, ["--lr", "'nan'"]),
    (train, ["--lr", "inf"], 2, ["--lr", "'inf'"]),
    (train, ["--lr", "-1"], 2, ["--lr", "> 0"]),
    (train, ["--lr-decay", "nan"], 2, ["--lr-decay"]),
    (train, ["--lr-decay", "0"], 2, ["--lr-decay", "> 0"]),
    (train, ["--lr-decay", "-0.5"], 2, ["--lr-decay"]),
    (train, ["--batch-size", "0"], 2, ["--batch-size"]),
    (train, ["--num-epochs", "-1"], 2, ["--num-epochs"]),
    (train, ["--threads", "0"], 2, ["--threads"]),
    (train, ["--threads", "-1"], 2, ["--threads", "positive integer"]),
    (train, ["--max-train", "0"], 2, ["--max-train"]),
    (train, ["--hidden-dim", "0"], 2, ["--hidden-dim"]),
    (train, ["--wordvec-dim", "-4"], 2, ["--wordvec-dim"]),
    (train, ["--print-every", "0"], 2, ["--print-every"]),
    (train, ["--beam-size", "0"], 2, ["--beam-size"]),
    (train, ["--eval-samples", "-3"], 2, ["--eval-samples"]),
    (train, ["--seed", "-1"], 2, ["--seed"]),
    (train, ["--hidden-dim", "x"], 2, ["--hidden-dim", "'x'"]),
    (train, ["--no-such-flag"], 2, ["--no-such-flag"]),
    (train, ["--data", D("nowhere")], 2, ["nowhere", "does not exist"]),
    (evaluate, [D("truncated.npz")], 2, ["truncated.npz"]),
    (evaluate, [D("empty.npz")], 2, ["empty.npz"]),
    (evaluate, [D("crc.npz")], 2, ["crc.npz", "CRC"]),
    (evaluate, [D("no_param.npz")], 2, ["no_param.npz", "Wx"]),
    (evaluate, [D("version.npz")], 2, ["version.npz"]),
    (evaluate, [D("run")], 2, ["run", "not a file"]),
    (evaluate, [D("run/checkpoint.npz"), "--json", D("a_file/x.json")], 2, ["--json", "a_file"]),
    (evaluate, [D("run/checkpoint.npz"), "--json", D("run")], 2, ["--json", "is a folder"]),
    (evaluate, [D("run/checkpoint.npz"), "--json", UNWRITABLE + ".json"], 2, ["--json", "/sys"]),
    (evaluate, [D("run/checkpoint.npz"), "--data", D("h5_truncated")], 2,
     ["coco2014_captions.h5"]),
    (evaluate, [D("run/checkpoint.npz"), "--num-samples", "0"], 2, ["--num-samples"]),
    (evaluate, [D("run/checkpoint.npz"), "--threads", "0"], 2, ["--threads"]),
    (evaluate, [D("run/checkpoint.npz"), "--threads", "-1"], 2, ["--threads", "positive integer"]),
    (evaluate, [D("run/checkpoint.npz"), "--beam-size", "0"], 2, ["--beam-size"]),
    (evaluate, [D("run/checkpoint.npz"), "--seed", "-1"], 2, ["--seed"]),
    (data, ["synth", "--out", D("a_file"), "--size", "tiny"], 2, ["--out", "a_file"]),
    (data, ["synth", "--out", UNWRITABLE, "--size", "tiny"], 2, ["--out", "/sys"]),
    (data, ["synth", "--out", D("x"), "--size", "1"], 2, ["--size"]),
    (data, ["synth", "--out", D("x"), "--size", "0"], 2, ["--size"]),
    (data, ["synth", "--out", D("x"), "--size", "-5"], 2, ["--size"]),
    (data, ["synth", "--out", D("x"), "--seed", "-1"], 2, ["--seed"]),
    (data, ["info", D("h5_truncated")], 2, ["coco2014_captions.h5"]),
    (data, ["info", D("h5_not_hdf5")], 2, ["train2014_vgg16_fc7_pca.h5"]),
    (data, ["info", D("nowhere")], 2, ["nowhere"]),
    (data, ["frobnicate"], 2, ["frobnicate"]),
    (bench, ["--json", UNWRITABLE + ".json", "--preset", "tiny"], 2, ["--json", "/sys"]),
    (bench, ["--json", D("run"), "--preset", "tiny"], 2, ["--json", "is a folder"]),
    (bench, ["--threads", "0"], 2, ["--threads"]),
    (bench, ["--iters", "0"], 2, ["--iters"]),
    (bench, ["--iters", "-3"], 2, ["--iters"]),
    (bench, ["--warmup", "-1"], 2, ["--warmup"]),
    (bench, ["--threads", "-1"], 2, ["--threads"]),
    (bench, ["--seed", "-1"], 2, ["--seed"]),
    (bench, ["--ranks", "0"], 2, ["--ranks"]),
    (cola, ["--threads", "0"], 2, ["--threads"]),
    (cola, ["--threads", "-1"], 2, ["--threads", "positive integer"]),
    (cola, ["--ensemble", "0"], 2, ["--ensemble"]),
    (cola, ["--bucket", "-1"], 2, ["--bucket"]),
    (cola, ["--swa-start", "-1"], 2, ["--swa-start"]),
    (cola, ["--pretrain-epochs", "-1"], 2, ["--pretrain-epochs"]),
    (cola, ["--mask-prob", "0"], 2, ["--mask-prob", "(0, 1)"]),
    (cola, ["--mask-prob", "1"], 2, ["--mask-prob", "(0, 1)"]),
    (cola, ["--subword-min-count", "0"], 2, ["--subword-min-count"]),
    (cola, ["--lm-order", "0"], 2, ["--lm-order"]),
    (cola, ["--lm-folds", "1"], 2, ["--lm-folds", ">= 2"]),
    (cola, ["--max-length", "0"], 2, ["--max-length"]),
    (cola, ["--patience", "-1"], 2, ["--patience"]),
    (cola, ["--time-limit", "-1"], 2, ["--time-limit"]),
    (cola, ["--bench-batches", "-1"], 2, ["--bench-batches"]),
    (cola, ["--batch-size", "0"], 2, ["--batch-size"]),
    (cola, ["--epochs", "0"], 2, ["--epochs"]),
    (cola, ["--dropout", "1.5"], 2, ["--dropout", "[0, 1)"]),
    (cola, ["--hidden-dim", "0"], 2, ["--hidden-dim"]),
    (cola, ["--lr", "-1"], 2, ["--lr"]),
    (cola, ["--lr", "nan"], 2, ["--lr"]),
    (cola, ["--weight-decay", "-1"], 2, ["--weight-decay"]),
    (cola, ["--out", UNWRITABLE + ".pt"], 2, ["--out", "/sys"]),
    (cola, ["--out", D("run")], 2, ["--out", "is a folder"]),
    (cola, ["--data", D("nowhere")], 2, ["nowhere"]),
]


def call(command, argv, capsys):
    try:
        status = command.main(argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def assert_one_error_line(command, status, err, expected_status, words):
    prog = PROGS[command]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert status == expected_status, err
    for word in words:
        assert word in lines[0], (word, err)


@pytest.mark.parametrize("command, argv, status, words", CASES,
                         ids=[f"{PROGS[c]} {' '.join(a)}".replace("{root}/", "")
                              for c, a, _, _ in CASES])
def test_bad_invocation_is_one_line(files, command, argv, status, words, capsys):
    if UNWRITABLE in " ".join(argv) and not sys_is_read_only():
        pytest.skip(f"{UNWRITABLE} is writable here")
    argv = [a.replace("{root}", str(files)) for a in argv]
    words = [w.replace("{root}", str(files)) for w in words]
    got, err = call(command, argv, capsys)
    assert_one_error_line(command, got, err, status, words)


def test_output_and_checkpoint_are_checked_before_the_data_is_loaded(files, capsys):
    """The --out and --resume checks come first: the (missing) data folder is never read."""
    status, err = call(train, ["--data", str(files / "nowhere"), "--out",
                               str(files / "a_file")], capsys)
    assert_one_error_line(train, status, err, 2, ["--out"])
    status, err = call(train, ["--data", str(files / "nowhere"), "--resume",
                               str(files / "crc.npz")], capsys)
    assert_one_error_line(train, status, err, 2, ["--resume", "crc.npz", "CRC"])


def test_divergence_is_a_runtime_error_and_writes_no_checkpoint(files, tmp_path, capsys):
    status, err = call(train, ["--data", str(files / "tiny"), "--out", str(tmp_path),
                               "--num-epochs", "2", *TINY_MODEL, "--lr", "1e300"], capsys)
    assert_one_error_line(train, status, err, 1, ["diverged", "no checkpoint was written"])
    assert not (tmp_path / "checkpoint.npz").exists()


def test_full_disk_during_a_checkpoint_is_one_line(files, tmp_path, monkeypatch, capsys):
    import errno

    from fastrnn.captioning import checkpoint
    run = tmp_path / "run"
    ckpt = files / "run" / "checkpoint.npz"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(ckpt.read_bytes())
    (run / "run.json").write_text((files / "run" / "run.json").read_text())

    def no_space(f, **arrays):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.np, "savez", no_space)
    status, err = call(train, ["--resume", str(run / "checkpoint.npz"), "--num-epochs", "2",
                               "--no-progress"], capsys)
    assert_one_error_line(train, status, err, 1, ["No space left on device",
                                                  "previous checkpoint is kept"])
    assert (run / "checkpoint.npz").read_bytes() == ckpt.read_bytes()
    assert sorted(os.listdir(run)) == ["checkpoint.npz", "metrics.jsonl", "run.json"]   # no temp file


def test_full_disk_while_writing_a_report_names_the_file(files, tmp_path, monkeypatch, capsys):
    import errno

    from fastrnn.captioning import checkpoint

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", no_space)
    status, err = call(train, ["--data", str(files / "tiny"), "--out", str(tmp_path),
                               "--num-epochs", "1", *TINY_MODEL], capsys)
    assert_one_error_line(train, status, err, 1, ["run.json", "No space left on device"])


def test_resume_lr_override_thread_warning_and_eval_samples(files, tmp_path):
    """--resume --lr replaces the saved rate (one line says so); another --threads than the
    checkpoint's warns; --eval-samples comes back from run.json. In a subprocess: it sets
    the process's thread count."""
    first = tmp_path / "first"
    assert train.main(["--data", str(files / "tiny"), "--num-epochs", "1", "--out", str(first),
                       *TINY_MODEL[:6], "--eval-samples", "7", "--no-progress"]) == 0
    saved = json.loads(str(np.load(first / "checkpoint.npz")["meta"]))["solver"]["num_threads"]
    other = 1 if saved != 1 else 2
    proc = subprocess.run(
        [sys.executable, "-m", "fastrnn.cli.train", "--resume", str(first / "checkpoint.npz"),
         "--num-epochs", "2", "--lr", "0.125", "--threads", str(other), "--no-progress",
         "--out", str(tmp_path / "second")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "--lr 0.125 replaces the checkpoint's learning rate" in out
    warning = [line for line in out.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"--threads {saved}" in warning[0]
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert metrics["eval_samples"] == 7
    assert metrics["threads"] == other
    assert metrics["eval_history"][-1]["learning_rate"] == pytest.approx(0.125 * 0.95)
