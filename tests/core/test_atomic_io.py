"""fastrnn._io: the one atomic writer, and every file fastrnn writes goes through it."""
import ast
import errno
import json
import os
import pathlib
import subprocess
import sys
import time
import types

import numpy as np
import pytest

import fastrnn
from fastrnn import _io
from fastrnn.captioning import checkpoint


def temp_files(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith(".tmp-"))


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after it)."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


@pytest.fixture
def replace_fails(monkeypatch):
    """os.replace (the rename over the target) fails with EXDEV, naming both paths."""
    def fail(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)
    monkeypatch.setattr(_io.os, "replace", fail)


# ------------------------------------------------------------------- the writer

def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.bin"
    path.write_bytes(b"old")
    _io.write_atomically(path, lambda f: f.write(b"new content"))
    assert path.read_bytes() == b"new content"
    assert os.listdir(tmp_path) == ["report.bin"]


def test_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "x.bin"
    _io.write_atomically(path, lambda f: f.write(b"x"))
    assert path.read_bytes() == b"x"


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_a_crash_in_the_middle_keeps_the_old_file(tmp_path, error):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"whole old file")
    seen = []

    def write(f):
        f.write(b"half a new")
        f.flush()
        seen.extend(temp_files(tmp_path))   # the temporary file exists while writing
        raise error

    with pytest.raises(type(error)):
        _io.write_atomically(path, write)
    assert len(seen) == 1 and seen[0].startswith(".tmp-checkpoint.npz-")
    assert path.read_bytes() == b"whole old file"
    assert os.listdir(tmp_path) == ["checkpoint.npz"]


def test_atomic_write_context_manager(tmp_path):
    path = tmp_path / "notes.txt"
    with _io.atomic_write(path, "w") as f:
        f.write("grüße\n")
        assert not path.exists()          # nothing at the target until the block ends
    assert path.read_bytes() == b"gr\xc3\xbc\xc3\x9fe\n"
    with pytest.raises(ValueError, match="inside"):
        with _io.atomic_write(path, "w") as f:
            f.write("replaced?")
            raise ValueError("inside")
    assert path.read_text(encoding="utf-8") == "grüße\n"
    assert os.listdir(tmp_path) == ["notes.txt"]
    with pytest.raises(ValueError, match="mode"):
        with _io.atomic_write(path, "a"):
            pass


def test_a_failing_rename_keeps_the_old_file_and_names_the_target(tmp_path, replace_fails):
    path = tmp_path / "out.json"
    path.write_bytes(b"{}")
    with pytest.raises(OSError) as info:
        _io.write_atomically(path, lambda f: f.write(b"[1, 2]"))
    assert info.value.errno == errno.EXDEV
    assert info.value.filename == str(path)       # the target, not the temporary file
    assert ".tmp-" not in str(info.value)
    assert path.read_bytes() == b"{}" and os.listdir(tmp_path) == ["out.json"]


def test_an_error_without_a_file_name_gets_the_target(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_io.os, "fsync", no_space)
    with pytest.raises(OSError) as info:
        _io.write_atomically(path, lambda f: f.write(b"data"))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert str(path) in str(info.value)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()

    def vague(f):
        raise OSError("the device went away")

    with pytest.raises(OSError, match=f"{path}.*the device went away"):
        _io.write_atomically(path, vague)


def test_an_error_naming_another_file_is_kept(tmp_path):
    other = tmp_path / "missing-input"

    def read_other(f):
        with open(other, "rb"):
            pass

    with pytest.raises(FileNotFoundError) as info:
        _io.write_atomically(tmp_path / "out", read_other)
    assert info.value.filename == str(other)


def test_a_folder_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OSError) as info:
        _io.write_atomically(blocker / "x.bin", lambda f: f.write(b"x"))
    assert str(blocker) in str(info.value.filename)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "f.bin"
    _io.write_atomically(path, lambda f: f.write(b"x"))
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    folder = _io.make_temp_dir(tmp_path / "dataset")
    assert os.stat(folder).st_mode & 0o777 == 0o777 & ~mask


def test_replacing_keeps_no_permissions_of_the_old_file(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    _io.write_atomically(path, lambda f: f.write(b"new"))
    assert os.stat(path).st_mode & 0o777 == 0o644


# --------------------------------------------------------- stale temporary files

def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    host = _io._owner().split("@", 1)[1]
    dead = f".tmp-run.json-{dead_pid()}@{host}-abc123"
    dead_folder = f".tmp-run.json-{dead_pid()}@{host}-fold01"
    live = f".tmp-run.json-{os.getpid()}@{host}-def456"
    other_host = f".tmp-run.json-{dead_pid()}@elsewhere_{host}-ghi789"
    other_target = f".tmp-run.json-2-{dead_pid()}@{host}-jkl012"   # of 'run.json-2'
    legacy = ".tmp-run.json-k2j4h5g6"
    legacy_other_target = ".tmp-run.json-2-k2j4h5g6"                # legacy of 'run.json-2'
    for name in (dead, live, other_host, other_target, legacy, legacy_other_target):
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / dead_folder).mkdir()
    (tmp_path / dead_folder / "inside.h5").write_bytes(b"partial")
    old = time.time() - 3600
    for name in (legacy, legacy_other_target):
        os.utime(tmp_path / name, (old, old))
    removed = _io.remove_stale_temp_files(tmp_path / "run.json")
    assert sorted(removed) == sorted([dead, dead_folder, legacy])
    assert temp_files(tmp_path) == sorted([live, other_host, other_target,
                                           legacy_other_target])


def test_a_write_removes_stale_temporaries_first(tmp_path):
    host = _io._owner().split("@", 1)[1]
    dead = f".tmp-x.bin-{dead_pid()}@{host}-abc123"
    (tmp_path / dead).write_bytes(b"partial")
    _io.write_atomically(tmp_path / "x.bin", lambda f: f.write(b"x"))
    assert os.listdir(tmp_path) == ["x.bin"]


def test_checkpoint_module_keeps_its_names():
    assert checkpoint.write_atomically is _io.write_atomically
    assert checkpoint._write_atomically is _io.write_atomically
    assert checkpoint.remove_stale_temp_files is _io.remove_stale_temp_files
    assert checkpoint._owner is _io._owner
    assert {"write_atomically", "remove_stale_temp_files"} <= set(checkpoint.__all__)


# ------------------------------------------------------- every writer goes through it

def test_write_json(tmp_path, replace_fails):
    from fastrnn.cli._common import write_json
    path = tmp_path / "metrics.json"
    path.write_text('{"old": true}')
    with pytest.raises(OSError) as info:
        write_json(path, {"loss": np.float32(1.5)})
    assert info.value.filename == str(path)
    assert path.read_text() == '{"old": true}' and os.listdir(tmp_path) == ["metrics.json"]


def test_write_json_values_and_errors(tmp_path):
    from fastrnn.cli._common import write_json
    path = tmp_path / "run.json"
    write_json(path, {"a": np.float32(1.5), "b": np.arange(3), "c": np.int64(2)})
    assert path.read_text() == '{\n  "a": 1.5,\n  "b": [\n    0,\n    1,\n    2\n  ],\n  "c": 2\n}'
    with pytest.raises(TypeError) as info:
        write_json(path, {"x": object()})
    assert "checkpoint" not in str(info.value) and "object" in str(info.value)
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": 2}   # kept


def fake_solver():
    model = types.SimpleNamespace(cell_type="lstm", hidden_dim=8, wordvec_dim=4)
    return types.SimpleNamespace(loss_history=list(np.linspace(3, 1, 40)),
                                 eval_history=[{"epoch": 1, "val_reference_bleu": 0.3}],
                                 model=model, update_rule_name="adam", batch_size=5)


def test_loss_plot(tmp_path, replace_fails):
    pytest.importorskip("matplotlib")
    from fastrnn.cli.train import plot_losses
    path = tmp_path / "loss.png"
    path.write_bytes(b"old plot")
    with pytest.raises(OSError) as info:
        plot_losses(fake_solver(), path)
    assert info.value.filename == str(path)
    assert path.read_bytes() == b"old plot" and os.listdir(tmp_path) == ["loss.png"]


def test_loss_plot_is_a_png_whatever_the_name(tmp_path):
    pytest.importorskip("matplotlib")
    from fastrnn.cli.train import plot_losses
    path = tmp_path / "loss"            # no extension: the format is png all the same
    plot_losses(fake_solver(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["loss"]


def test_captioning_checkpoint(tmp_path, replace_fails):
    from fastrnn.captioning import CaptioningRNN
    model = CaptioningRNN({"<NULL>": 0, "<START>": 1, "<END>": 2, "a": 3}, input_dim=4,
                          wordvec_dim=3, hidden_dim=5, seed=0)
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(b"previous")
    with pytest.raises(checkpoint.CheckpointWriteError, match="previous checkpoint is kept"):
        checkpoint.save_checkpoint(path, model)
    assert path.read_bytes() == b"previous" and os.listdir(tmp_path) == ["checkpoint.npz"]


def test_cola_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from fastrnn.cola import ClassificationTransformer, TrainConfig
    from fastrnn.cola import checkpoint as cola_checkpoint
    model = ClassificationTransformer({"<pad>": 0, "<unk>": 1, "[CLS]": 2, "a": 3},
                                      hidden_dim=8, dim_feedforward=16, dim_k=4, dim_v=4,
                                      dim_q=4, max_length=6, seed=0)
    best = {"state": model.state_dict(), "threshold": 0.5, "epoch": 1, "val_mcc": 0.1}
    path = tmp_path / "cola.pt"
    cola_checkpoint.save_checkpoint(path, model, best, TrainConfig())
    loaded, saved = cola_checkpoint.load_checkpoint(path)
    assert saved["epoch"] == 1
    whole = path.read_bytes()

    def fail(src, dst):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)

    monkeypatch.setattr(_io.os, "replace", fail)
    best["epoch"] = 2
    with pytest.raises(OSError) as info:
        cola_checkpoint.save_checkpoint(path, model, best, TrainConfig())
    assert info.value.filename == str(path)
    assert path.read_bytes() == whole and os.listdir(tmp_path) == ["cola.pt"]


def test_synthetic_dataset_folder(tmp_path, umask):
    from fastrnn.captioning.data import synthetic
    umask(0o027)
    host = _io._owner().split("@", 1)[1]
    stale = tmp_path / f".tmp-data-{dead_pid()}@{host}-abc123"   # a killed generator's
    stale.mkdir()
    (stale / "coco2014_captions.h5").write_bytes(b"partial")
    synthetic.generate(tmp_path / "data", size=40, progress=False)
    assert os.listdir(tmp_path) == ["data"]
    assert os.stat(tmp_path / "data").st_mode & 0o777 == 0o750
    for name in os.listdir(tmp_path / "data"):
        assert os.stat(tmp_path / "data" / name).st_mode & 0o777 == 0o640, name
    synthetic.generate(tmp_path / "data", size=40, progress=False, overwrite=True)
    assert os.listdir(tmp_path) == ["data"]


def test_synthetic_folder_not_renamed_keeps_the_old_one(tmp_path, monkeypatch):
    from fastrnn.captioning.data import synthetic
    synthetic.generate(tmp_path / "data", size=40, progress=False)
    before = {n: (tmp_path / "data" / n).read_bytes() for n in os.listdir(tmp_path / "data")}

    def interrupted(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(_io, "fsync_tree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "data", size=60, seed=1, progress=False, overwrite=True)
    assert os.listdir(tmp_path) == ["data"]
    assert {n: (tmp_path / "data" / n).read_bytes()
            for n in os.listdir(tmp_path / "data")} == before


# ------------------------------------------------------ no other way to write files

PACKAGE = pathlib.Path(fastrnn.__file__).parent
# Files written inside the synthetic generator's temporary folder (renamed as a whole) and
# that rename, the metrics.jsonl append stream of fastrnn-train (appending is not
# replacing), and the check that an output file can be opened for writing (writes nothing).
ALLOWED = {("captioning/data/synthetic.py", "_write_dataset"),
           ("captioning/data/synthetic.py", "_write_h5"),
           ("captioning/data/synthetic.py", "_write_raw_features"),
           ("captioning/data/synthetic.py", "_move_into_place"),
           ("cli/train.py", "run"),
           ("cli/_common.py", "check_writable_file")}


def _writes(tree):
    """(function, what) for each call that writes a file directly."""
    found = []

    class Visitor(ast.NodeVisitor):
        def __init__(self):
            self.function = "<module>"

        def visit_FunctionDef(self, node):
            outer, self.function = self.function, node.name
            self.generic_visit(node)
            self.function = outer

        def visit_Call(self, node):
            name = ast.unparse(node.func)
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            modes += [k.value.value for k in node.keywords
                      if k.arg == "mode" and isinstance(k.value, ast.Constant)]
            writing_mode = any(isinstance(m, str) and set(m) & set("wax+") for m in modes)
            if (name in ("open", "io.open", "h5py.File") and writing_mode) \
                    or name in ("json.dump", "np.save", "np.savez", "np.savez_compressed",
                                "np.savetxt", "torch.save", "pickle.dump", "os.rename",
                                "os.replace", "shutil.move") \
                    or name.endswith((".savefig", ".write_text", ".write_bytes", ".tofile")):
                found.append((self.function, name, node))
            self.generic_visit(node)

    Visitor().visit(tree)
    return found


def test_no_file_is_written_around_the_atomic_writer():
    unexpected = []
    for source in sorted(PACKAGE.rglob("*.py")):
        rel = source.relative_to(PACKAGE).as_posix()
        if rel == "_io.py":
            continue
        for function, name, node in _writes(ast.parse(source.read_text(encoding="utf-8"))):
            inside_writer = any(isinstance(a, ast.Name) and a.id == "f" for a in node.args)
            if (rel, function) in ALLOWED:
                continue
            if inside_writer:      # writes into the file object of atomic_write / write_atomically
                continue
            unexpected.append(f"{rel}:{node.lineno} {function}: {name}")
    assert unexpected == []


def test_the_scan_finds_a_direct_write():
    tree = ast.parse("def save(p, fig):\n    fig.savefig(p)\n    open(p, 'w')\n"
                     "    np.savez(p, a=1)\n")
    assert [(f, n) for f, n, _ in _writes(tree)] == [("save", "fig.savefig"), ("save", "open"),
                                                    ("save", "np.savez")]
