"""CoLA reading/encoding (fastrnn.cola.data) and the fastrnn-cola command.

Everything runs on a small generated GLUE-layout folder; the real CoLA release is
used for a short run when the project's shared copy is present next to the
repository (tests may look there; the package never does).
"""
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastrnn.cli import cola as cli  # noqa: E402
from fastrnn.cola import data as cola  # noqa: E402
from fastrnn.cola import load_checkpoint, training  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REAL_COLA = next((p for p in (REPO.parent / "shared" / "data" / "cola",
                              Path("/work/shared/data/cola")) if (p / "train.tsv").is_file()), None)

DETS, NOUNS = ["the", "a"], ["dog", "cat", "bird", "man", "child", "teacher"]
VERBS = ["saw", "chased", "liked", "heard"]


def write_tsv(path, rows):
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def synthetic_rows(n, seed):
    """Sentences whose label depends on word order only: 'det noun verb det noun.' is
    acceptable (1), the same words with noun and verb swapped are not (0)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        d1, d2 = rng.choice(DETS, 2)
        n1, n2 = rng.choice(NOUNS, 2)
        v = rng.choice(VERBS)
        if rng.random() < 0.7:
            rows.append(("syn01", "1", "", f"{d1.capitalize()} {n1} {v} {d2} {n2}."))
        else:
            rows.append(("syn01", "0", "*", f"{d1.capitalize()} {v} {n1} {d2} {n2}."))
    return rows


@pytest.fixture
def cola_dir(tmp_path):
    folder = tmp_path / "cola"
    folder.mkdir()
    train = synthetic_rows(300, seed=0)
    train.append(("syn02", "1", "", 'He said "yes" to " the dog."'))  # quotes are literal
    train.append(("syn02", "0", "*", " ".join(["dog"] * 60)))          # longer than 43 tokens
    write_tsv(folder / "train.tsv", train)
    write_tsv(folder / "dev.tsv", synthetic_rows(80, seed=1) + [("syn03", "1", "", "Zebras sing.")])
    return folder


# ------------------------------------------------------------ tokens, vocabulary

def test_tokenize_lowercases_and_splits_punctuation():
    assert cola.tokenize("Won't they?  The CAT, é.") == \
        ["won", "'", "t", "they", "?", "the", "cat", ",", "é", "."]


def test_vocabulary_has_specials_first_then_words_by_frequency():
    vocab = cola.build_vocab(["b a b", "c b a"])
    assert vocab == {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "b": 3, "a": 4, "c": 5}
    assert cola.build_vocab(["b a b", "c b a"], min_count=2) == \
        {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "b": 3, "a": 4}


def test_encode_prepends_cls_pads_truncates_and_maps_unknown_words():
    vocab = cola.build_vocab(["the dog saw the cat ."])
    ids, pad_mask = cola.encode(["The zebra saw.", " ".join(["dog"] * 50)], vocab, max_length=43)
    assert ids.shape == pad_mask.shape == (2, 43) and ids.dtype == np.int64
    assert ids[0, :5].tolist() == [vocab["[CLS]"], vocab["the"], vocab["<unk>"], vocab["saw"],
                                   vocab["."]]
    assert (ids[0, 5:] == vocab["<pad>"]).all()
    assert pad_mask[0].tolist() == [False] * 5 + [True] * 38
    assert ids[1, 0] == vocab["[CLS]"] and (ids[1, 1:] == vocab["dog"]).all()
    assert not pad_mask[1].any()


# -------------------------------------------------------------------- loading

def test_load_cola_splits_train_and_keeps_dev_held_out(cola_dir):
    data = cola.load_cola(cola_dir, n_train=250, split_seed=3)
    assert (len(data.train), len(data.val), len(data.test)) == (250, 52, 81)
    train_sentences = [s for s in (cola_dir / "train.tsv").read_text().splitlines()]
    assert len(train_sentences) == 302
    # Seeded: the same seed gives the same split, another seed a different one.
    again = cola.load_cola(cola_dir, n_train=250, split_seed=3)
    assert again.train.sentences == data.train.sentences
    assert cola.load_cola(cola_dir, n_train=250, split_seed=4).train.sentences != \
        data.train.sentences
    # train and val partition train.tsv.
    assert sorted(data.train.sentences + data.val.sentences) == \
        sorted(line.split("\t")[3] for line in train_sentences)
    # The vocabulary sees only the training split: "zebras" (dev only) is unknown.
    assert "zebras" not in data.word_to_ix
    assert data.test.ids[-1, 1] == data.word_to_ix["<unk>"]
    assert data.train.ids.shape[1] == cola.MAX_LENGTH
    assert set(np.unique(data.test.labels)) <= {0, 1}
    assert '"yes"' in "".join(data.train.sentences + data.val.sentences)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        cola.load_cola(tmp_path)
    write_tsv(tmp_path / "train.tsv", synthetic_rows(20, 0))
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv"):
        cola.load_cola(tmp_path, n_train=10)
    with pytest.raises(FileNotFoundError, match="CoLA folder not found"):
        cola.load_cola(tmp_path / "nowhere")


@pytest.mark.parametrize("bad_line, words", [
    ("gj04\t1\tThe dog barked.", r"line 3: expected 4 tab-separated columns .* got 3"),
    ("gj04\tyes\t\tThe dog barked.", r"line 3, column 2 \(label\): expected 0 or 1, got 'yes'"),
    ("gj04\t1\t\t  ", r"line 3, column 4 \(sentence\): the sentence is empty"),
    ("", r"line 3: empty line"),
])
def test_malformed_lines_are_reported_with_file_line_and_column(tmp_path, bad_line, words):
    rows = ["gj04\t1\t\tThe dog barked.", "gj04\t0\t*\tDog the barked.", bad_line,
            "gj04\t1\t\tA cat sat."]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=words) as info:
        cola.read_cola_tsv(tmp_path / "train.tsv")
    assert "train.tsv" in str(info.value)


def test_n_train_must_leave_a_validation_split(cola_dir):
    with pytest.raises(ValueError, match="n_train must be between 1 and 301"):
        cola.load_cola(cola_dir, n_train=302)


def test_data_folder_lookup(cola_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTRNN_COLA", str(cola_dir))
    assert cola.find_cola_dir() == cola_dir
    assert cola.find_cola_dir(tmp_path) == tmp_path          # an explicit folder wins
    monkeypatch.delenv("FASTRNN_COLA")
    # No guessing: a CoLA copy next to the working directory is not picked up.
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "cola").symlink_to(cola_dir)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(FileNotFoundError, match=r"pass --data DIR.*FASTRNN_COLA.*published at"):
        cola.find_cola_dir()


def test_package_names_no_development_machine_paths():
    package = Path(cola.__file__).resolve().parents[1]
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if "shared/data" in path.read_text(encoding="utf-8")
                 or "/work/" in path.read_text(encoding="utf-8")]
    assert offenders == []


# ------------------------------------------------------------------------ CLI

SMALL = ["--hidden-dim", "16", "--heads", "2", "--head-dim", "8", "--dim-feedforward", "32",
         "--no-progress", "--threads", "1"]


def test_cli_trains_reports_and_writes_a_checkpoint(cola_dir, tmp_path, capsys):
    out = tmp_path / "ckpt" / "best.pt"
    code = cli.main(["--data", str(cola_dir), "--n-train", "250", "--epochs", "12",
                     "--batch-size", "16", "--lr", "3e-3", "--dropout", "0", "--embed-dropout",
                     "0", "--out", str(out), "--bench-batches", "2", "--threshold", "0.5"] + SMALL)
    assert code == 0
    text = capsys.readouterr().out
    assert "majority class (1)" in text and "sentences/s" in text and "with mask" in text
    # The library logs each epoch (logger fastrnn.cola.training); the CLI prints it.
    assert re.search(r"^epoch +2  train loss [0-9.]+  val loss [0-9.]+  val MCC", text, re.M)
    model, checkpoint = load_checkpoint(out)
    result = checkpoint["result"]
    assert result["majority_accuracy"] == pytest.approx(np.mean(
        cola.load_cola(cola_dir, n_train=250).test.labels == 1))
    assert result["majority_mcc"] == 0.0
    # The label depends on word order only, which a bag of words cannot see: the
    # model must have learned it from the position embeddings and attention.
    assert result["test_mcc"] > 0.5, result
    # The checkpoint's model reproduces the reported score.
    data = cola.load_cola(cola_dir, n_train=250)
    probs = training.evaluate(model, data.test, mask=True)["probs"]
    accuracy = np.mean((probs >= checkpoint["threshold"]) == data.test.labels)
    assert accuracy == pytest.approx(result["test_accuracy"])
    assert not list(out.parent.glob(".*tmp*"))  # the atomic write left no temporary file


def test_cli_without_mask_and_other_pooling_runs(cola_dir, capsys):
    code = cli.main(["--data", str(cola_dir), "--n-train", "250", "--epochs", "3",
                     "--no-mask", "--pooling", "mean", "--bench-batches", "0",
                     "--word-dropout", "0.1", "--label-smoothing", "0.1", "--ema", "0.9",
                     "--augment", "0.5", "--threshold", "tune", "--time-limit", "1e-9"] + SMALL)
    assert code == 0
    text = capsys.readouterr().out
    assert "mask off" in text
    assert "best epoch 1 of 1 (stopped by --time-limit)" in text


def test_cli_max_pooling_checkpoint_reloads_with_max_pooling(cola_dir, tmp_path, capsys):
    out = tmp_path / "max.pt"
    assert cli.main(["--data", str(cola_dir), "--n-train", "250", "--epochs", "2",
                     "--pooling", "max", "--bench-batches", "0", "--out", str(out)] + SMALL) == 0
    model, checkpoint = load_checkpoint(out)
    assert model.pooling == "max"
    data = cola.load_cola(cola_dir, n_train=250)
    probs = training.evaluate(model, data.test, mask=True)["probs"]
    assert np.mean((probs >= 0.5) == data.test.labels) == \
        pytest.approx(checkpoint["result"]["test_accuracy"])


def test_cli_reports_missing_data_clearly(tmp_path, capsys):
    assert cli.main(["--data", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.tsv" in err and str(tmp_path) in err


def test_cli_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--data", "--epochs", "--batch-size", "--lr", "--heads", "--mask", "--seed",
                 "--pooling", "--dropout", "--weight-decay", "--schedule", "--out"):
        assert flag in text


def test_learning_rate_schedule_warms_up_then_decays():
    f = training.lr_lambda("cosine", warmup=0.1, total_steps=100)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) < 1e-9
    assert training.lr_lambda("constant", 0.0, 100)(70) == 1.0
    assert training.lr_lambda("linear", 0.0, 100)(75) == pytest.approx(0.25)


# ------------------------------------------------------------------ real CoLA

needs_real = pytest.mark.skipif(REAL_COLA is None, reason="no shared CoLA copy found")


@needs_real
def test_real_cola_has_the_documented_shape():
    data = cola.load_cola(REAL_COLA)
    assert (len(data.train), len(data.val), len(data.test)) == (7000, 1551, 1043)
    assert np.mean(data.test.labels) == pytest.approx(721 / 1043)
    assert (data.train.ids[:, 0] == data.word_to_ix["[CLS]"]).all()
    lengths = (~data.train.pad_mask).sum(axis=1)
    assert lengths.min() >= 2 and lengths.max() <= 43


@needs_real
def test_short_real_cola_run(capsys, tmp_path):
    code = cli.main(["--data", str(REAL_COLA), "--max-train", "1000", "--epochs", "1",
                     "--bench-batches", "2", "--out", str(tmp_path / "real.pt")] + SMALL)
    assert code == 0
    text = capsys.readouterr().out
    assert "held-out dev (1043 sentences)" in text
    result = torch.load(tmp_path / "real.pt", weights_only=True)["result"]
    assert result["majority_accuracy"] == pytest.approx(0.6913, abs=1e-4)
    assert 0.0 <= result["test_accuracy"] <= 1.0 and -1.0 <= result["test_mcc"] <= 1.0


def _is_one_local_edit(original, copy):
    """copy is original with two neighbouring words swapped, one word dropped or repeated."""
    if len(copy) == len(original):
        diff = [i for i, (a, b) in enumerate(zip(original, copy)) if a != b]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and \
            (copy[diff[0]], copy[diff[1]]) == (original[diff[1]], original[diff[0]])
    if len(copy) == len(original) - 1:
        return any(original[:i] + original[i + 1:] == copy for i in range(len(original)))
    if len(copy) == len(original) + 1:
        return any(original[:i] + [original[i]] + original[i:] == copy
                   for i in range(len(original)))
    return False


def test_corrupted_copies_are_labelled_unacceptable_and_differ_by_one_local_edit():
    torch.manual_seed(0)
    T, pad = 12, 0
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([11, 8, 5, 3, 9, 12, 6, 7])
    pad_mask = torch.arange(T)[None, :] >= lengths[:, None]
    ids = torch.randint(3, 50, (8, T), generator=g).masked_fill(pad_mask, pad)
    ids[:, 0] = 2                                        # [CLS]
    labels = torch.tensor([1., 1., 1., 1., 0., 1., 1., 1.])
    new_ids, new_mask, new_labels, no_subwords = training.add_corrupted_copies(
        ids, pad_mask, labels, 1.0, pad)
    assert no_subwords is None
    # Every acceptable row long enough (>= 5 tokens) gets one copy; the others none.
    sources = [0, 1, 2, 5, 6, 7]
    assert torch.equal(new_ids[:8], ids) and torch.equal(new_labels[:8], labels)
    assert new_labels[8:].tolist() == [0.0] * len(sources)
    edits = 0
    for source, row in zip(sources, range(8, len(new_ids))):
        original = ids[source][~pad_mask[source]].tolist()
        copy = new_ids[row][~new_mask[row]].tolist()
        assert (new_ids[row][new_mask[row]] == pad).all()
        assert copy[0] == original[0] and copy[-1] == original[-1]   # [CLS] and the last token
        if copy != original:  # swapping two equal words or repeating at full length is a no-op
            assert _is_one_local_edit(original, copy), (original, copy)
            edits += 1
    assert edits >= len(sources) - 1


def test_cli_rejects_a_bad_threshold(cola_dir, capsys):
    assert cli.main(["--data", str(cola_dir), "--threshold", "1.5", "--no-progress"]) == 2
    assert "--threshold must be in (0, 1)" in capsys.readouterr().err


def test_training_logs_epochs_through_logging_not_print(cola_dir, caplog, capsys):
    import logging
    config = cli.config_from_args(cli.build_parser().parse_args(
        ["--data", str(cola_dir), "--n-train", "250", "--epochs", "2", "--bench-batches", "0"]
        + SMALL))
    with caplog.at_level(logging.INFO, logger="fastrnn.cola"):
        training.train(config)
    epochs = [r.getMessage() for r in caplog.records if r.name == "fastrnn.cola.training"
              and r.getMessage().startswith("epoch")]
    assert len(epochs) == 2
    assert "epoch" not in capsys.readouterr().out   # the library itself prints no epoch lines
