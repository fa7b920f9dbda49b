"""fastrnn.cola as a library: TrainConfig, train(), the versioned checkpoint, the
deprecated module paths, and fastrnn-cola --help without torch. Small generated data."""
import dataclasses
import importlib
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastrnn.cola import ConfigError, TrainConfig, accuracy, matthews_corrcoef

SMALL_CONFIG = dict(hidden_dim=16, heads=2, head_dim=8, dim_feedforward=32, progress=False,
                    threads=1, bench_batches=0)


# ------------------------------------------------------------------ TrainConfig

def test_config_defaults_are_the_recipe_and_plain_data():
    config = TrainConfig()
    assert (config.hidden_dim, config.epochs, config.lr, config.threshold, config.subwords) == \
        (128, 20, 1e-3, 0.5, None)
    assert dataclasses.asdict(config)["pooling"] == "flatten"
    assert TrainConfig(subwords="3-5").subwords == (3, 5)
    assert TrainConfig(subwords="off").subwords is None
    assert TrainConfig(threshold="tune").tuned_threshold
    assert TrainConfig(threshold="0.4").threshold == 0.4


@pytest.mark.parametrize("changes, field, words", [
    (dict(epochs=0), "epochs", "epochs must be >= 1"),
    (dict(hidden_dim=2.5), "hidden_dim", "hidden_dim must be >= 1"),
    (dict(lr=float("nan")), "lr", "lr must be a finite number > 0"),
    (dict(dropout=1.0), "dropout", "dropout must be a number in [0, 1)"),
    (dict(pooling="sum"), "pooling", "pooling must be one of flatten, cls, mean, max"),
    (dict(threshold=1.5), "threshold", "threshold must be in (0, 1)"),
    (dict(subwords="3"), "subwords", "subwords must be 'off' or MIN-MAX"),
    (dict(mask=1), "mask", "mask must be True or False"),
    (dict(swa_start=2, ema=0.9), "swa_start", "swa_start cannot be combined with ema"),
    (dict(lm_features=True, augment=0.5), "augment", "augment cannot be combined with lm_features"),
])
def test_config_rejects_bad_fields_naming_them(changes, field, words):
    with pytest.raises(ConfigError, match=re.escape(words)) as err:
        TrainConfig(**changes)
    assert isinstance(err.value, ValueError) and err.value.names[0] == field
    assert "--" + field.replace("_", "-") in err.value.with_flags()


def test_metrics_match_their_definitions():
    y, p = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    assert accuracy(y, p) == pytest.approx(3 / 5)
    tp, tn, fp, fn = 2, 1, 1, 1
    assert matthews_corrcoef(y, p) == pytest.approx(
        (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    with pytest.raises(ValueError, match="same length"):
        accuracy(y, p[:3])
    with pytest.raises(ValueError, match="y_pred must hold only 0 and 1"):
        accuracy(y, [0.9, 0.1, 0.2, 0.3, 0.8])
    import fastrnn.cola.metrics
    assert matthews_corrcoef is fastrnn.cola.metrics.matthews_corrcoef     # one implementation


# ------------------------------------------------------- train() and checkpoints

torch_needed = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="no torch")


@pytest.fixture
def cola_dir(write_cola):
    """'The <noun> <verb>ed .' (1) or with noun and verb swapped (0)."""
    rng = np.random.default_rng(0)

    def rows(n):
        out = []
        for _ in range(n):
            noun, verb = rng.choice(["cats", "dogs", "hens"]), rng.choice(["walk", "jump"])
            good = rng.random() < 0.7
            out.append((f"The {noun} {verb}ed." if good else f"The {verb}ed {noun}.", good))
        return out
    return write_cola(rows(120), rows(30))


@torch_needed
def test_train_from_python_writes_a_checkpoint_that_reproduces_the_report(cola_dir, tmp_path):
    import torch

    from fastrnn.cola import load_checkpoint, train
    from fastrnn.cola.checkpoint import FORMAT, VERSION
    from fastrnn.cola.training import evaluate
    out = tmp_path / "cola.pt"
    threads = torch.get_num_threads()
    config = TrainConfig(data=cola_dir, n_train=100, epochs=3, min_count=1, out=out,
                         **SMALL_CONFIG)
    result = train(config)
    assert torch.get_num_threads() == threads        # restored after training
    assert len(result.report["history"]) == 3 and result.data.data_dir == cola_dir
    model, checkpoint = load_checkpoint(out)
    assert (checkpoint["format"], checkpoint["version"]) == (FORMAT, VERSION)
    assert checkpoint["train_config"] == dataclasses.asdict(config)
    assert TrainConfig(**checkpoint["train_config"]) == config
    # Plain data only: the file loads with weights_only=True.
    raw = torch.load(out, weights_only=True)
    assert raw["result"]["test_accuracy"] == result.report["test_accuracy"]
    probs = evaluate(model, result.data.test, mask=True)["probs"]
    np.testing.assert_allclose(probs, evaluate(result.model, result.data.test, True)["probs"],
                               rtol=1e-6)
    assert accuracy(result.data.test.labels, probs >= checkpoint["threshold"]) == \
        pytest.approx(result.report["test_accuracy"])


@torch_needed
def test_old_and_foreign_checkpoints_are_refused_with_a_hint(cola_dir, tmp_path):
    import argparse

    import torch

    from fastrnn.cola import load_checkpoint, train
    from fastrnn.cola.checkpoint import VERSION, CheckpointError
    good = tmp_path / "good.pt"
    train(TrainConfig(data=cola_dir, n_train=100, epochs=1, min_count=1, out=good,
                      **SMALL_CONFIG))
    checkpoint = torch.load(good, weights_only=True)

    unversioned = tmp_path / "unversioned.pt"       # the format before versioning
    torch.save({k: v for k, v in checkpoint.items() if k not in ("format", "version")},
               unversioned)
    with pytest.raises(CheckpointError, match=r"unversioned.pt is not a versioned .*retrain"):
        load_checkpoint(unversioned)
    pickled = tmp_path / "pickled.pt"               # an argparse namespace inside
    torch.save(dict(checkpoint, args=argparse.Namespace(seed=0)), pickled)
    with pytest.raises(CheckpointError, match=r"pickled.pt: holds pickled Python objects"):
        load_checkpoint(pickled)
    newer = tmp_path / "newer.pt"
    torch.save(dict(checkpoint, version=VERSION + 1), newer)
    with pytest.raises(CheckpointError, match=rf"version {VERSION + 1}.*upgrade fastrnn"):
        load_checkpoint(newer)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")


# ----------------------------------------------------------- compatibility

@pytest.mark.parametrize("old, new, name", [
    ("fastrnn.transformer", "fastrnn.cola.transformer", "ClassificationTransformer"),
    ("fastrnn.cola_lm", "fastrnn.cola.lm", "lm_features"),
    ("fastrnn.data.cola", "fastrnn.cola.data", "load_cola"),
])
def test_deprecated_module_paths_still_import_and_warn(old, new, name, monkeypatch):
    if old == "fastrnn.transformer":
        pytest.importorskip("torch")
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=new.rsplit(".", 1)[0]):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_new_paths_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        importlib.import_module("fastrnn.cola")
        importlib.import_module("fastrnn.cli.cola")


NO_TORCH = "import sys; sys.modules['torch'] = None; from fastrnn.cli.cola import main; "


def _without_torch(code, *args):
    return subprocess.run([sys.executable, "-c", NO_TORCH + code, *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, PYTHONWARNINGS="ignore"))


def test_cola_help_works_without_torch_and_a_run_says_what_to_install(tmp_path):
    shown = _without_torch("sys.exit(main(['--help']))")
    assert shown.returncode == 0, shown.stderr
    assert "--pretrain-epochs" in shown.stdout and "--threshold" in shown.stdout
    run = _without_torch(f"sys.exit(main(['--data', {str(tmp_path)!r}, '--no-progress']))")
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]       # one line
    assert run.stderr.startswith("fastrnn-cola: error: fastrnn-cola needs PyTorch") \
        and "pip install" in run.stderr
