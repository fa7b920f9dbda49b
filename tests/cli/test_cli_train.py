"""fastrnn-train and fastrnn-eval, run in-process on a tiny synthetic COCO folder."""
import json

import pytest

from fastrnn.captioning import checkpoint
from fastrnn.captioning.data import synthetic
from fastrnn.cli import evaluate, train

# small enough for a second or two per run
FAST = ["--hidden-dim", "32", "--wordvec-dim", "16", "--batch-size", "100", "--eval-samples",
        "40", "--no-progress", "--print-every", "5"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco") / "tiny"
    synthetic.generate(folder, size="tiny", seed=0, progress=False)
    return folder


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One epoch of fastrnn-train; returns (out folder, its stdout)."""
    out = tmp_path_factory.mktemp("run") / "out"
    capture = pytest.MonkeyPatch()
    lines = []
    capture.setattr("builtins.print", lambda *a, **k: lines.append(" ".join(map(str, a))))
    try:
        status = train.main(["--data", str(tiny), "--num-epochs", "1", "--out", str(out), *FAST])
    finally:
        capture.undo()
    assert status == 0
    return out, "\n".join(lines)


def test_train_writes_its_outputs(trained):
    out, _ = trained
    for name in ("checkpoint.npz", "loss.png", "metrics.json", "run.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iterations"] == 15            # 1,500 captions / batch 100, one epoch
    assert metrics["model"]["cell_type"] == "lstm" and metrics["model"]["hidden_dim"] == 32
    assert set(metrics["val"]) == {"reference_bleu", "bleu1", "bleu2", "bleu3", "bleu4"}
    assert all(0 <= v <= 1 for v in metrics["val"].values())
    assert metrics["oracle"]["reference_bleu"] > 0     # read from synthetic_info.json
    assert metrics["seconds_per_iteration"]["median"] > 0
    assert len(metrics["samples"]) == 5 and metrics["samples"][0]["ground_truth"]
    assert len(metrics["eval_history"]) == 1
    model = checkpoint.load_model(out / "checkpoint.npz")
    assert model.hidden_dim == 32 and model.cell_type == "lstm"


def test_train_logs_metrics_jsonl(trained):
    """metrics.jsonl: one JSON object per logged iteration (--print-every 5: 1, 6, 11)
    and per evaluation, readable line by line (as pandas.read_json(lines=True) does)."""
    out, _ = trained
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    iterations = [r for r in records if r["event"] == "iteration"]
    assert [r["iteration"] for r in iterations] == [1, 6, 11]
    for r in iterations:
        assert set(r) == {"event", "iteration", "epoch", "loss", "learning_rate",
                          "seconds_per_iteration"}
        assert r["loss"] > 0 and r["learning_rate"] > 0 and r["seconds_per_iteration"] > 0
    evals = [r for r in records if r["event"] == "eval"]
    assert len(evals) == 1 and evals[0]["iteration"] == 15 and evals[0]["epoch"] == 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    assert evals[0]["val_reference_bleu"] == metrics["eval_history"][0]["val_reference_bleu"]


def test_train_prints_backend_speed_scores_and_samples(trained):
    _, text = trained
    assert "backend" in text and "s/iteration" in text
    assert "reference (unigram sentence BLEU)" in text and "oracle" in text
    assert "model:" in text and "truth:" in text


def test_resume_trains_on_to_the_new_epoch_count(trained, tiny, tmp_path):
    out, _ = trained
    status = train.main(["--resume", str(out / "checkpoint.npz"), "--num-epochs", "2",
                         "--out", str(tmp_path), "--eval-samples", "0", "--no-progress"])
    assert status == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iterations"] == 30
    assert metrics["data"] == str(tiny)   # the data folder came from the run's run.json
    assert "val" not in metrics           # --eval-samples 0 skips scoring


def test_eval_scores_a_checkpoint(trained, tiny, tmp_path, capsys):
    out, _ = trained
    report = tmp_path / "scores.json"
    status = evaluate.main([str(out / "checkpoint.npz"), "--data", str(tiny), "--num-samples",
                            "30", "--beam-size", "2", "--no-progress", "--json", str(report)])
    assert status == 0
    text = capsys.readouterr().out
    assert "beam 2 decoding" in text and "BLEU4 (corpus)" in text and "model:" in text
    scores = json.loads(report.read_text())
    assert scores["beam_size"] == 2 and set(scores["scores"]) >= {"reference_bleu", "bleu4"}


def test_missing_data_folder_suggests_the_generator(tmp_path, capsys):
    status = train.main(["--data", str(tmp_path / "nowhere"), "--no-progress"])
    assert status == 2
    assert "fastrnn-data synth" in capsys.readouterr().err


def test_eval_of_a_missing_checkpoint(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "none.npz")]) == 2
    assert "none.npz" in capsys.readouterr().err


def test_presets_and_explicit_flags():
    parser = train.build_parser()
    baseline = train.settings_from(parser.parse_args(["--preset", "baseline"]))
    assert baseline == dict(cell_type="lstm", hidden_dim=2048, wordvec_dim=256, batch_size=1024,
                            num_epochs=3, update_rule="adam", lr=1e-4, lr_decay=0.9,
                            dtype="float32", print_every=10)
    tuned = train.settings_from(parser.parse_args(["--preset", "baseline", "--lr", "3e-4",
                                                   "--cell-type", "rnn"]))
    assert tuned["lr"] == 3e-4 and tuned["cell_type"] == "rnn" and tuned["hidden_dim"] == 2048
    with pytest.raises(SystemExit):   # range-checked by the parser (one line, exit 2)
        parser.parse_args(["--batch-size", "0"])


@pytest.mark.parametrize("command", [train, evaluate])
def test_help_documents_every_flag(command, capsys):
    with pytest.raises(SystemExit) as info:
        command.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for action in command.build_parser()._actions:
        for flag in action.option_strings:
            assert flag in text
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest


def test_gemm_flag_chooses_the_provider(tiny, tmp_path, capsys):
    import fastrnn
    from fastrnn import gemm
    compiled = [b for b in fastrnn.available_backends() if b != "numpy"]
    if not compiled:
        pytest.skip("the GEMM provider serves the compiled backends' fused path")
    try:
        status = train.main(["--data", str(tiny), "--num-epochs", "1", "--out",
                             str(tmp_path / "out"), "--gemm", "numpy", "--backend", compiled[0],
                             "--eval-samples", "0", *FAST[:6], "--no-progress"])
        assert status == 0
        assert "GEMM provider numpy (large products via numpy)" in capsys.readouterr().out
        metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
        assert metrics["gemm"] == "numpy"
    finally:
        gemm.set_default_provider(None)
    with pytest.raises(SystemExit):
        train.main(["--gemm", "blis"])
    assert "invalid choice: 'blis'" in capsys.readouterr().err


@pytest.mark.parametrize("progress", [True, False])
def test_no_progress_reaches_the_generation_of_the_built_in_set(monkeypatch, progress):
    seen = []
    monkeypatch.delenv("FASTRNN_DATA", raising=False)
    monkeypatch.setattr(synthetic, "ensure_dataset",
                        lambda size, progress=True: seen.append(progress) or "/made")
    assert evaluate.resolve_data_dir(None, "fastrnn-train", progress) == "/made"
    assert seen == [progress]
