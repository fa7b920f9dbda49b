"""LM surprisal features for CoLA (fastrnn.cola.lm) and fastrnn-cola --lm-features.
Small generated data only."""
import dataclasses
import math
from collections import Counter

import numpy as np
import pytest

from fastrnn.cola.lm import EOS, FEATURE_NAMES, OOV, KneserNeyLM, lm_features

torch = pytest.importorskip("torch")

from fastrnn.cli import cola as cli  # noqa: E402
from fastrnn.cola import TrainConfig, WithFeatures, load_checkpoint, matthews_corrcoef, training  # noqa: E402
from fastrnn.cola import data as cola  # noqa: E402

CORPUS = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran", "the cat ran",
                              "a dog sat down", "the bird sat"]]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("context", [(), ("the",), ("cat", "sat"), ("zebra", "the"),
                                     ("never", "seen", "this")])
def test_kneser_ney_is_a_distribution_over_the_vocabulary(order, context):
    lm = KneserNeyLM(CORPUS, order=order, min_count=1)
    total = sum(lm.prob(w, context) for w in lm.vocab)
    assert total == pytest.approx(1.0, abs=1e-12)
    assert all(lm.prob(w, context) > 0 for w in lm.vocab)


def test_kneser_ney_bigram_matches_the_textbook_formula():
    """Interpolated KN, written out directly for a bigram model."""
    D = 0.5
    lm = KneserNeyLM(CORPUS, order=2, discount=D, min_count=1)
    words = [["<s>"] + s + [EOS] for s in CORPUS]
    bigrams = Counter((a, b) for s in words for a, b in zip(s, s[1:]))
    distinct_bigrams = len(bigrams)
    vocab = {w for s in CORPUS for w in s} | {EOS, OOV}

    def p_continuation(w):   # share of distinct bigram types that end in w
        ends = sum(1 for (_, b) in bigrams if b == w)
        types = len({b for (_, b) in bigrams})
        return max(ends - D, 0) / distinct_bigrams + D * types / distinct_bigrams / len(vocab)

    def p(w, prev):
        after = {b: c for (a, b), c in bigrams.items() if a == prev}
        total = sum(after.values())
        return max(after.get(w, 0) - D, 0) / total + D * len(after) / total * p_continuation(w)

    for prev, w in [("the", "cat"), ("the", "dog"), ("cat", "down"), ("<s>", "a"),
                    ("sat", EOS), ("dog", "ran")]:
        assert lm.prob(w, (prev,)) == pytest.approx(p(w, prev), rel=1e-12)
    # Unseen words read as <oov>, which has only the uniform share.
    assert lm.prob("zebra", ("the",)) == lm.prob(OOV, ("the",)) > 0


def test_token_logprobs_score_every_token_and_the_end():
    lm = KneserNeyLM(CORPUS, order=3, min_count=1)
    logp = lm.token_logprobs(["the", "cat", "sat"])
    assert logp.shape == (4,)
    assert logp[1] == pytest.approx(math.log(lm.prob("cat", ("<s>", "the"))))
    # A sentence seen in training is likelier than its words shuffled.
    assert logp.sum() > lm.token_logprobs(["sat", "the", "cat"]).sum()


def test_kneser_ney_checks_its_arguments():
    with pytest.raises(ValueError, match="order"):
        KneserNeyLM(CORPUS, order=0)
    with pytest.raises(ValueError, match="discount"):
        KneserNeyLM(CORPUS, discount=1.0)


def _labelled(n, seed=0):
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    for _ in range(n):
        noun, verb = rng.choice(["cats", "dogs", "hens"]), rng.choice(["walked", "slept"])
        good = rng.random() < 0.7
        sentences.append(f"The {noun} {verb} today." if good else f"The {verb} {noun} today.")
        labels.append(int(good))
    return sentences, np.array(labels)


def test_lm_features_are_cross_fitted_and_separate_the_classes():
    sentences, labels = _labelled(200)
    other, other_labels = _labelled(50, seed=1)
    train, test = lm_features(sentences, labels, [other], folds=4)
    assert train.shape == (200, len(FEATURE_NAMES)) and test.shape == (50, len(FEATURE_NAMES))
    assert train.dtype == np.float32 and np.isfinite(train).all()
    ratio = FEATURE_NAMES.index("ratio_mean")
    # Word order decides the label, and the two LMs see it: the ratio separates.
    assert test[other_labels == 1, ratio].min() > test[other_labels == 0, ratio].max()
    # Cross-fitting: a sentence's own label is not in the LMs that score it, so
    # flipping it leaves its features unchanged (and changes other sentences').
    flipped = labels.copy()
    flipped[7] = 1 - flipped[7]
    train_flipped, = lm_features(sentences, flipped, folds=4)
    np.testing.assert_array_equal(train_flipped[7], train[7])
    assert not np.array_equal(train_flipped, train)


def test_lm_features_checks_its_arguments():
    sentences, labels = _labelled(20)
    with pytest.raises(ValueError, match="folds"):
        lm_features(sentences, labels, folds=1)
    with pytest.raises(ValueError, match="labels"):
        lm_features(sentences, labels[:-1])


@pytest.fixture
def cola_dir(write_cola):
    train, dev = (list(zip(*_labelled(n, seed))) for n, seed in ((200, 0), (40, 1)))
    return write_cola(train, dev)


SMALL = ["--hidden-dim", "16", "--heads", "2", "--head-dim", "8", "--dim-feedforward", "32",
         "--no-progress", "--threads", "1", "--bench-batches", "0"]
SMALL_CONFIG = dict(hidden_dim=16, heads=2, head_dim=8, dim_feedforward=32, progress=False,
                    threads=1, bench_batches=0)


def test_cli_lm_features_fit_first_stay_frozen_and_reload(cola_dir, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert cli.main(["--data", str(cola_dir), "--n-train", "160", "--epochs", "2",
                     "--lm-features", "--lm-folds", "3", "--out", str(out)] + SMALL) == 0
    assert "held-out dev" in capsys.readouterr().out
    model, checkpoint = load_checkpoint(out)
    assert checkpoint["num_features"] == len(FEATURE_NAMES)
    assert isinstance(model, WithFeatures)
    # The feature term alone already separates this data (fitted before training).
    data = cola.load_cola(cola_dir, n_train=160, min_count=2)
    config = TrainConfig(lm_features=True, lm_folds=3, **SMALL_CONFIG)
    training.attach_lm_features(data, config)
    torch.manual_seed(0)
    fresh = training.build_model(data, config)
    weight = fresh.feature_layer.weight.clone()
    assert not fresh.feature_layer.weight.requires_grad and weight.abs().sum() > 0
    val = training.to_tensors(data.val)
    feature_logits = fresh.feature_layer(val["features"])[:, 0]
    assert matthews_corrcoef(data.val.labels, feature_logits.detach().numpy() > 0) > 0.9
    training.fit_and_select(fresh, data, dataclasses.replace(config, epochs=1, patience=0))
    torch.testing.assert_close(fresh.feature_layer.weight, weight, rtol=0, atol=0)
    # The checkpoint's model scores sentences given their features.
    probs = model(val["ids"], val["pad_mask"], features=val["features"])
    assert probs.shape == (len(data.val), 1)
    with pytest.raises(ValueError, match="features"):
        model(val["ids"], val["pad_mask"])


def test_cli_rejects_bad_lm_flags(cola_dir, capsys):
    # A bad combination is refused by TrainConfig (main returns 2), a value out of range
    # already by argparse (SystemExit 2): the same one line and status either way.
    for flags, message in ((["--lm-features", "--augment", "0.5"], "--augment"),
                           (["--lm-features", "--lm-folds", "1"], "--lm-folds")):
        try:
            status = cli.main(["--data", str(cola_dir), "--n-train", "160"] + flags + SMALL)
        except SystemExit as exit_:
            status = exit_.code
        assert status == 2
        assert message in capsys.readouterr().err


# ------------------------------------------------------- source-held-out split

def _examples(sizes):
    return [cola.ColaExample(source, i % 2, "", f"sentence {source} {i}.")
            for source, n in sizes.items() for i in range(n)]


def test_source_split_holds_out_whole_sources_near_the_asked_size():
    sizes = {"a": 50, "b": 30, "c": 20, "d": 10, "e": 5, "f": 40}
    examples = _examples(sizes)
    for seed in range(5):
        train, val = cola.source_split(examples, 35, seed)
        held = {e.source for e in val}
        assert held.isdisjoint(e.source for e in train)
        assert len(train) + len(val) == len(examples)
        assert len(val) == sum(sizes[s] for s in held)     # every held source entirely
        assert 35 <= len(val) <= 1.2 * 35 or len(held) == 1
        assert train == [e for e in examples if e.source not in held]   # file order kept
    splits = {tuple(sorted({e.source for e in cola.source_split(examples, 35, s)[1]}))
              for s in range(5)}
    assert len(splits) > 1                                  # seeded, not fixed
    with pytest.raises(ValueError, match="whole sources"):
        cola.source_split(_examples({"a": 10}), 3)


def test_load_cola_source_split(tmp_path):
    folder = tmp_path / "cola"
    folder.mkdir()
    rows = [f"s{k}\t{i % 2}\t\tThe dog {k} ran {i}.\n" for k in range(6) for i in range(20)]
    (folder / "train.tsv").write_text("".join(rows))
    (folder / "dev.tsv").write_text("d\t1\t\tThe dog ran.\n")
    data = cola.load_cola(folder, n_train=80, split="source", min_count=1)
    assert 40 <= len(data.val) <= 48 and len(data.val) % 20 == 0
    val_sources = {s.split()[2] for s in data.val.sentences}
    assert val_sources.isdisjoint(s.split()[2] for s in data.train.sentences)
    with pytest.raises(ValueError, match="split must be one of"):
        cola.load_cola(folder, n_train=80, split="by-length")


# ------------------------------------------------------- stochastic weight averaging

def test_swa_validates_the_mean_of_epoch_end_weights(cola_dir, monkeypatch):
    data = cola.load_cola(cola_dir, n_train=160, min_count=1)
    config = TrainConfig(swa_start=2, epochs=3, patience=0, lr=1e-2, **SMALL_CONFIG)
    torch.manual_seed(0)
    model = training.build_model(data, config)
    seen = []                                   # (raw weights, validated weights) per epoch
    real_evaluate = training.evaluate

    def recording_evaluate(evaluated, split, mask):
        seen.append(({n: p.detach().clone() for n, p in model.named_parameters()},
                     {n: p.detach().clone() for n, p in evaluated.named_parameters()}))
        return real_evaluate(evaluated, split, mask)
    monkeypatch.setattr(training, "evaluate", recording_evaluate)
    training.fit_and_select(model, data, config)
    assert len(seen) == 3
    raw, validated = zip(*seen)
    name = "W_q.weight"
    torch.testing.assert_close(validated[0][name], raw[0][name], rtol=0, atol=0)  # before E
    torch.testing.assert_close(validated[1][name], raw[1][name])                  # one sample
    torch.testing.assert_close(validated[2][name], (raw[1][name] + raw[2][name]) / 2)
    assert not torch.equal(raw[1][name], raw[2][name])


def test_swa_flag_checks(cola_dir, capsys):
    for flags in (["--swa-start", "-1"], ["--swa-start", "2", "--ema", "0.99"]):
        try:    # -1 stops in argparse, the combination in TrainConfig
            status = cli.main(["--data", str(cola_dir), "--n-train", "160"] + flags + SMALL)
        except SystemExit as exit_:
            status = exit_.code
        assert status == 2
        assert "--swa-start" in capsys.readouterr().err
