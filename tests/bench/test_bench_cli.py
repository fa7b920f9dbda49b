"""fastrnn-bench (tiny preset, in-process) and its PyTorch baseline."""
import importlib.util
import json

import numpy as np
import pytest

import fastrnn
from fastrnn.backends.gate_order import from_torch_order
from fastrnn.bench import training
from fastrnn.captioning.model import CaptioningRNN
from fastrnn.cli import bench
from fastrnn.gradcheck import rel_error

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")


def test_dense_count_at_full_scale():
    # About 2.06 TFLOP per iteration when every one of the 16 timesteps is computed
    # densely: the figure the projected full-COCO times are based on.
    assert training.dense_flops(**training.PRESETS["full"]) == pytest.approx(2.06e12, rel=0.005)


def test_engine_count_is_the_products_the_engine_runs(monkeypatch):
    """engine_flops against a provider that counts every product the engine asks for."""
    from fastrnn import gemm
    from fastrnn.captioning import engine
    base, counted = gemm.gemm_provider("numpy"), []

    class Counting:
        name = uses = "counting"

        def mm(self, a, b, out=None):
            counted.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
            return base.mm(a, b, out)

        def mm_add(self, a, b, out, scratch):
            counted.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
            base.mm_add(a, b, out, scratch)

        def product(self, a, b, scratch):
            counted.append(2 * a.shape[0] * a.shape[1] * b.shape[1])
            return base.product(a, b, scratch)

    monkeypatch.setattr(engine, "gemm_provider", lambda name=None: Counting())
    cfg = dict(N=9, T=6, D=7, W=5, H=4, V=13)
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2, **{f"w{i}": i for i in range(3, 13)}}
    model = CaptioningRNN(words, input_dim=7, wordvec_dim=5, hidden_dim=4, cell_type="lstm",
                          dtype=np.float32)
    rng = np.random.default_rng(0)
    captions = rng.integers(3, 13, (9, 7))
    captions[:, 0] = 1
    captions[rng.random((9, 7)) < 0.2] = 0       # holes and short captions
    captions[2, 3:] = 0
    captions[5, 1:] = 0                          # no target at all
    features = rng.standard_normal((9, 7), dtype=np.float32)
    engine.captioning_loss(model.params, features, captions, null_idx=0, precision="fp32")
    assert sum(counted) == training.engine_flops(captions, 0, **cfg)
    assert training.engine_flops(captions, 0, **cfg) < training.dense_flops(**cfg)


def test_coco_like_lengths():
    for features, captions in training.make_batches(training.PRESETS["full"], seed=3):
        assert features.shape == (1024, 512) and features.dtype == np.float32
        assert captions.shape == (1024, 17) and captions[:, 0].tolist() == [1] * 1024
        words = (captions[:, 1:] != 0).sum(axis=1) - 1  # targets minus <END>
        assert 9.5 < words.mean() < 11.5 and words.max() <= 15
        assert 0.6 < np.mean((words >= 8) & (words <= 13)) < 0.95


def test_tiny_run_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    contenders = training.available_contenders()
    assert bench.main(["--preset", "tiny", "--iters", "2", "--warmup", "0", "--no-memory",
                       "--no-progress", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("contender"))
    assert header.split() == " ".join(training.COLUMNS).split()
    assert "GFLOP/s" in out and "sgemm" in out

    result = json.loads(path.read_text())
    rows = {r["contender"]: r for r in result["rows"]}
    assert len(rows) == len(contenders) and "numpy reference" in rows
    ref = rows["numpy reference"]
    for name, r in rows.items():
        assert name in out
        assert len(r["seconds"]) == 2 and r["median_s"] == pytest.approx(np.median(r["seconds"]))
        assert r["speedup_vs_reference"] == pytest.approx(ref["median_s"] / r["median_s"])
        assert r["dense_gflops"] == pytest.approx(
            result["dense_flop_per_iteration"] / r["median_s"] / 1e9)
        if name.startswith("fastrnn"):
            assert r["engine_gflops"] == pytest.approx(
                result["engine_flop_per_iteration"] / r["median_s"] / 1e9)
        else:
            assert r["engine_gflops"] is None
        assert r["projected_full_run_hours"] == pytest.approx(r["median_s"] * 1170 / 3600)
        # Same initial weights and batch: every contender starts from the same loss.
        assert r["first_loss"] == pytest.approx(ref["first_loss"], rel=1e-4)
    if HAS_TORCH:   # the ratio column compares with the fastest PyTorch variant
        torch_s = min(rows[n]["median_s"] for n in ("pytorch", "pytorch packed"))
        assert max(rows[n]["speedup_vs_pytorch"] for n in ("pytorch", "pytorch packed")) \
            == pytest.approx(1.0)
        assert ref["speedup_vs_pytorch"] == pytest.approx(torch_s / ref["median_s"])
    assert len(result["sgemm_gflops"]) == 2 and result["sgemm_gflops_median"] > 0


def test_memory_is_measured_in_a_fresh_process(tmp_path):
    path = tmp_path / "bench.json"
    bench.main(["--preset", "tiny", "--iters", "1", "--warmup", "0", "--backends", "numpy",
                "--no-progress", "--json", str(path)])
    (row,) = json.loads(path.read_text())["rows"]
    assert row["peak_rss_bytes"] > 10 * 2 ** 20
    assert abs(row["rss_growth_bytes"]) < 50 * 2 ** 20


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--preset", "--iters", "--warmup", "--threads", "--backends", "--json",
                 "--seed", "--no-memory", "--profile", "--no-progress"):
        assert flag in out


@pytest.mark.parametrize("argv, message", [
    (["--backends", "tensorflow"], "unknown contender 'tensorflow'"),
    (["--iters", "0"], "expected a positive integer"),
    (["--preset", "huge"], "invalid choice"),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        bench.main(argv)
    assert message in capsys.readouterr().err


@needs_torch
@pytest.mark.parametrize("packed", [False, True])
def test_torch_baseline_computes_the_reference_loss_and_gradients(packed):
    import torch

    from fastrnn.captioning.torch_baseline import TorchCaptioningLSTM
    rng = np.random.default_rng(4)
    words = ["<NULL>", "<START>", "<END>", "<UNK>"] + [f"w{i}" for i in range(9)]
    model = CaptioningRNN({w: i for i, w in enumerate(words)}, input_dim=7, wordvec_dim=5,
                          hidden_dim=6, cell_type="lstm", dtype=np.float64, seed=0)
    for k, v in model.params.items():
        model.params[k] = v + 0.3 * rng.standard_normal(v.shape)
    captions = rng.integers(0, 13, (6, 8))
    captions[:, 0] = 1
    captions[2, 1:] = 0          # no target at all
    captions[3, 6:] = 0          # trailing padding; the zeros drawn elsewhere are holes
    features = rng.standard_normal((6, 7))
    with fastrnn.use_backend("numpy"):
        loss, grads = model.loss(features, captions)

    twin = TorchCaptioningLSTM(13, 7, 5, 6, packed=packed, dtype=torch.float64)
    twin.load_params(model.params)
    t_loss = twin(torch.from_numpy(features), torch.from_numpy(captions))
    t_loss.backward()
    assert rel_error(loss, t_loss.item()) < 1e-12
    assert rel_error(grads["W_vocab"], twin.vocab.weight.grad.numpy().T) < 1e-9
    assert rel_error(grads["W_embed"], twin.embed.weight.grad.numpy()) < 1e-9
    H = 6
    dWh = twin.lstm.weight_hh_l0.grad.numpy().T      # PyTorch gate order i, f, g, o
    assert rel_error(grads["Wh"], from_torch_order(dWh, H)) < 1e-9
