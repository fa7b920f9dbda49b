"""Character n-gram subwords in fastrnn.cola.data, and the fastrnn-cola options that
use them (--subwords) or combine models (--ensemble). Small generated data only."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastrnn.cli import cola as cli  # noqa: E402
from fastrnn.cola import (  # noqa: E402
    ClassificationTransformer,  # noqa: E402
    MeanEnsemble,
    load_checkpoint,
    training,
)
from fastrnn.cola import data as cola  # noqa: E402

SMALL = ["--hidden-dim", "16", "--heads", "2", "--head-dim", "8", "--dim-feedforward", "32",
         "--no-progress", "--threads", "1", "--bench-batches", "0"]


@pytest.fixture
def cola_dir(write_cola):
    """Acceptable: 'the <noun> <verb>ed .'; unacceptable: verb before noun. Nouns are
    plurals ending in -s; dev uses nouns never seen in train."""
    rng = np.random.default_rng(0)

    def rows(n, nouns):
        out = []
        for _ in range(n):
            noun, verb = rng.choice(nouns), rng.choice(["walk", "jump", "sleep", "talk"])
            good = rng.random() < 0.7
            out.append((f"The {noun} {verb}ed." if good else f"The {verb}ed {noun}.", good))
        return out
    return write_cola(rows(160, ["cats", "dogs", "birds", "hens"]), rows(40, ["owls", "pigs"]))


def test_char_ngrams_mark_word_boundaries():
    assert cola.char_ngrams("dog", 3, 4) == ["<do", "dog", "og>", "<dog", "dog>"]
    assert cola.char_ngrams("a", 3, 5) == ["<a>"]
    assert cola.char_ngrams("[CLS]") == [] and cola.char_ngrams("<unk>") == []


def test_subword_vocabulary_counts_training_ngrams():
    vocab = cola.build_subword_vocab(["ab ab", "abc"], n_min=3, n_max=3, min_count=2)
    # "<ab" is in all three tokens, "ab>" in two; "abc", "bc>" only once.
    assert vocab == {"": 0, "<ab": 1, "ab>": 2}
    assert len(cola.build_subword_vocab(["ab ab", "abc"], 3, 3, min_count=1)) == 5
    with pytest.raises(ValueError, match="n_min <= n_max"):
        cola.build_subword_vocab(["ab"], 4, 3)


def test_encoded_subwords_line_up_with_the_tokens():
    vocab = {"": 0, "<do": 1, "dog": 2, "og>": 3, "<ca": 4}
    sentences = ["Dog cat dogs", "x " * 50]
    grams = cola.encode_subwords(sentences, vocab, 3, 3, max_length=8, max_subwords=2)
    ids, _ = cola.encode(sentences, {"<pad>": 0, "<unk>": 1, "[CLS]": 2}, max_length=8)
    assert grams.shape == (2, 8, 2) and grams.dtype == np.int64
    assert grams[0, 0].tolist() == [0, 0]            # [CLS]
    assert grams[0, 1].tolist() == [1, 2]            # "dog": <do dog (og> cut by max_subwords)
    assert grams[0, 2].tolist() == [4, 0]            # "cat": only <ca is known
    assert grams[0, 3].tolist() == [1, 2]            # "dogs" shares <do dog with "dog"
    assert (grams[0, 4:] == 0).all()                 # padding
    assert (grams[1] == 0).all() and ids.shape == (2, 8)  # truncated like encode, none known


def test_load_cola_with_subwords(cola_dir):
    data = cola.load_cola(cola_dir, n_train=120, min_count=1, subwords=(3, 5))
    assert data.subword_range == (3, 5)
    for split in (data.train, data.val, data.test):
        assert split.subwords.shape == split.ids.shape + (cola.MAX_SUBWORDS,)
        assert not split.subwords[split.pad_mask].any() and not split.subwords[:, 0].any()
    # Dev nouns are unknown words but share n-grams ("s>", "<th" ...) with training words.
    unknown = data.test.ids == data.word_to_ix["<unk>"]
    assert unknown.any() and (data.test.subwords[unknown] > 0).any()
    assert cola.load_cola(cola_dir, n_train=120).train.subwords is None


def test_corrupted_copies_carry_their_subwords():
    torch.manual_seed(0)
    lengths = torch.tensor([7, 6, 9])
    T = 10
    pad_mask = torch.arange(T)[None, :] >= lengths[:, None]
    ids = torch.arange(30).reshape(3, T).masked_fill(pad_mask, 0)
    subwords = (ids[..., None] * 100 + torch.arange(3)).masked_fill(pad_mask[..., None], 0)
    new_ids, new_mask, _, new_sub = training.add_corrupted_copies(
        ids, pad_mask, torch.ones(3), 1.0, 0, subwords)
    assert len(new_ids) == 6 and torch.equal(new_sub[:3], subwords)
    # Each copy's subwords are those of the token now at that position.
    expected = (new_ids[..., None] * 100 + torch.arange(3)).masked_fill(new_mask[..., None], 0)
    assert torch.equal(new_sub, expected)


def test_subword_ensemble_run_writes_a_checkpoint_that_reproduces_it(cola_dir, tmp_path, capsys):
    out = tmp_path / "ens.pt"
    code = cli.main(["--data", str(cola_dir), "--n-train", "120", "--epochs", "4",
                     "--batch-size", "16", "--lr", "3e-3", "--min-count", "1",
                     "--subwords", "3-5", "--ensemble", "2", "--threshold", "tune",
                     "--out", str(out)] + SMALL)
    assert code == 0
    text = capsys.readouterr().out
    assert "2-member ensemble (mean of probabilities)" in text and "seed 1000" in text
    model, checkpoint = load_checkpoint(out)
    assert isinstance(model, MeanEnsemble) and checkpoint["ensemble"] == 2
    a, b = model.members
    assert a.config()["num_subwords"] == len(checkpoint["subword_to_ix"]) > 1
    assert not torch.equal(a.token_embedding.weight, b.token_embedding.weight)
    # The saved vocabularies re-encode dev exactly as in training, and the saved
    # ensemble (mean of its members) reproduces the reported accuracy.
    data = cola.load_cola(cola_dir, n_train=120, min_count=1, subwords=checkpoint["subwords"])
    assert data.subword_to_ix == checkpoint["subword_to_ix"]
    probs = training.evaluate(model, data.test, mask=True)["probs"]
    member_mean = np.mean([training.evaluate(m, data.test, mask=True)["probs"] for m in (a, b)], 0)
    np.testing.assert_allclose(probs, member_mean, rtol=1e-5)
    accuracy = np.mean((probs >= checkpoint["threshold"]) == data.test.labels)
    assert accuracy == pytest.approx(checkpoint["result"]["test_accuracy"])


def test_single_model_checkpoint_with_subwords_loads(cola_dir, tmp_path, capsys):
    out = tmp_path / "one.pt"
    assert cli.main(["--data", str(cola_dir), "--n-train", "120", "--epochs", "1",
                     "--subwords", "2-4", "--augment", "0.5", "--word-dropout", "0.2",
                     "--out", str(out)] + SMALL) == 0
    model, checkpoint = load_checkpoint(out)
    assert isinstance(model, ClassificationTransformer) and checkpoint["ensemble"] == 1
    assert checkpoint["subwords"] == (2, 4) and model.num_subwords == \
        len(checkpoint["subword_to_ix"])


@pytest.mark.parametrize("flags, words", [
    (["--subwords", "3"], "--subwords must be 'off' or MIN-MAX"),
    (["--subwords", "5-3"], "1 <= MIN <= MAX"),
    (["--ensemble", "0"], "--ensemble: expected a positive integer"),
    (["--bucket", "-1"], "--bucket: expected an integer >= 0"),
    (["--mask-prob", "1.5"], "--mask-prob: expected a number in (0, 1)"),
    (["--subwords", "3-5", "--subword-min-count", "0", "--n-train", "100"],
     "--subword-min-count: expected a positive integer"),
])
def test_bad_subword_and_ensemble_flags_are_rejected(cola_dir, capsys, flags, words):
    # Values out of range stop in argparse (SystemExit), bad --subwords in TrainConfig
    # (main returns): one line and status 2 either way.
    try:
        status = cli.main(["--data", str(cola_dir), "--no-progress"] + flags)
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    assert words in capsys.readouterr().err
