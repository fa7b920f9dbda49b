"""BLEU metrics: hand-computed cases of the formulas, and the model-level wrappers with fake models."""
import importlib
import math
import warnings

import numpy as np
import pytest

from fastrnn.captioning import metrics
from fastrnn.captioning.data import decode_captions
from fastrnn.cola import metrics as cola_metrics


def test_clean_caption_drops_special_tokens():
    assert metrics.clean_caption("<START> a <UNK> cat <END> <NULL>") == ["a", "cat"]
    assert metrics.clean_caption("") == []
    with pytest.raises(TypeError, match="str"):
        metrics.clean_caption(["a", "cat"])


def test_unigram_bleu_identical_and_disjoint():
    assert metrics.unigram_bleu("<START> a man riding a horse <END>", "a man riding a horse") == 1.0
    assert metrics.unigram_bleu("a man riding a horse", "two dogs play") == 0.0
    assert metrics.unigram_bleu("a man riding a horse", "") == 0.0


def test_unigram_bleu_by_hand_with_brevity_penalty():
    # candidate 5 words, 4 in the reference (a x2 clipped to 2, man, horse; "on" misses):
    # precision 4/5; candidate shorter than the 6-word reference: BP = exp(1 - 6/5)
    score = metrics.unigram_bleu("<START> a man riding a brown horse <END>", "a man on a horse <END>")
    assert score == pytest.approx(0.8 * math.exp(1 - 6 / 5), abs=1e-12)


def test_unigram_bleu_by_hand_clipping_no_penalty():
    # candidate 8 words; "a" appears 3 times but only twice in the reference: 5 clipped
    # matches; the candidate is longer than the reference so BP = 1
    score = metrics.unigram_bleu("a man riding a horse", "a man riding a horse on a beach")
    assert score == pytest.approx(5 / 8, abs=1e-12)


def test_unk_does_not_count():
    assert metrics.unigram_bleu("a <UNK> dog", "a <UNK> cat") == pytest.approx(
        metrics.unigram_bleu("a dog", "a cat"))


def test_mean_unigram_bleu():
    refs, cands = ["a b c", "a b c d"], ["a b c", "x y"]
    assert metrics.mean_unigram_bleu(refs, cands) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="pair up"):
        metrics.mean_unigram_bleu(refs, cands[:1])
    with pytest.raises(ValueError, match="no captions"):
        metrics.mean_unigram_bleu([], [])


def test_corpus_bleu_by_hand():
    refs = [["a cat sat", "one cat"], ["the dog ran"]]
    cands = ["a cat", "the dog ran fast"]
    scores = metrics.corpus_bleu_1_to_4(refs, cands)
    # unigrams: 2/2 + 3/4 matched = 5/6; bigrams: "a cat" 1/1 + 2/3 = 3/4.
    # length: candidate 2 -> closest reference "one cat" (2); candidate 4 -> 3: r = 5 < c = 6, BP = 1
    assert scores["bleu1"] == pytest.approx(5 / 6, abs=1e-12)
    assert scores["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 4), abs=1e-12)
    # trigrams: "the dog ran" matches 1 of 2; nltk counts a candidate without trigrams ("a cat")
    # as 1 unmatched trigram (denominator max(1, count)): 1/3. 4-grams: 0 matches -> 0
    assert scores["bleu3"] == pytest.approx((5 / 6 * 3 / 4 * 1 / 3) ** (1 / 3), abs=1e-12)
    assert scores["bleu4"] == pytest.approx(0.0, abs=1e-12)


def test_corpus_bleu_perfect_and_errors():
    refs = [["a man riding a big brown horse", "x"], ["two dogs play in the green grass"]]
    cands = ["a man riding a big brown horse", "two dogs play in the green grass"]
    assert metrics.corpus_bleu_1_to_4(refs, cands) == {f"bleu{n}": 1.0 for n in range(1, 5)}
    with pytest.raises(ValueError, match="pair up"):
        metrics.corpus_bleu_1_to_4(refs, cands[:1])
    with pytest.raises(ValueError, match="at least one reference"):
        metrics.corpus_bleu_1_to_4([[], ["a"]], ["a", "a"])


VOCAB = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat", "dog", "on", "mat", "sofa", "red"]
W = {w: i for i, w in enumerate(VOCAB)}


def _data():
    """Image i has feature row (i, ...); captions differ per image; each image has 2 captions."""
    texts = [["a cat on a mat", "a red cat on a sofa"],
             ["a dog on a sofa", "a red dog on a mat"],
             ["a red mat", "a mat on a sofa"]]
    captions, idxs = [], []
    for image, pair in enumerate(texts):
        for text in pair:
            row = [W["<START>"]] + [W[w] for w in text.split()] + [W["<END>"]]
            captions.append(row + [0] * (17 - len(row)))
            idxs.append(image)
    captions, idxs = np.array(captions, np.int32), np.array(idxs, np.int32)
    features = np.repeat(np.arange(3, dtype=np.float32)[:, None], 5, axis=1)
    data = {"idx_to_word": VOCAB, "word_to_idx": W}
    for split in ("train", "val"):
        data.update({f"{split}_captions": captions, f"{split}_image_idxs": idxs,
                     f"{split}_features": features,
                     f"{split}_urls": np.array(["u0", "u1", "u2"])})
    return data, texts


class LookupModel:
    """Answers each image with a fixed caption per image; records how it was called."""

    def __init__(self, answers):
        self.answers, self.calls = answers, []

    def sample(self, features, max_length=30, **kwargs):
        self.calls.append((len(features), max_length, kwargs))
        out = np.zeros((len(features), max_length), np.int32)
        for n, image in enumerate(features[:, 0].astype(int)):
            ids = [W[w] for w in self.answers[image].split()] + [W["<END>"]]
            out[n, :len(ids)] = ids
        return out


def test_reference_bleu_matches_hand_average():
    data, texts = _data()
    model = LookupModel(["a cat on a mat", "a dog on a sofa", "a red mat"])
    score = metrics.reference_bleu(model, data, num_samples=50, seed=3, batch_size=16,
                                   progress=False)
    # the same draw the metric makes: 50 captions with replacement from rng(seed)
    rows = np.random.default_rng(3).choice(6, 50)
    expected = np.mean([metrics.unigram_bleu(texts[r // 2][r % 2], model.answers[r // 2])
                        for r in rows])
    assert score == pytest.approx(expected, abs=1e-12)
    assert [c[0] for c in model.calls] == [16, 16, 16, 2]
    assert all(c[1] == 30 and c[2] == {} for c in model.calls)   # beam_size 1 is not passed


def test_reference_bleu_perfect_model_on_one_caption_per_image():
    data, texts = _data()
    keep = np.array([0, 2, 4])   # first caption of each image only
    data["val_captions"], data["val_image_idxs"] = data["val_captions"][keep], data["val_image_idxs"][keep]
    model = LookupModel([pair[0] for pair in texts])
    assert metrics.reference_bleu(model, data, num_samples=20, progress=False) == 1.0


def test_beam_size_is_passed_through():
    data, texts = _data()
    model = LookupModel([pair[0] for pair in texts])
    metrics.reference_bleu(model, data, num_samples=4, beam_size=3, progress=False)
    metrics.corpus_bleu_scores(model, data, num_images=2, beam_size=3, progress=False)
    assert all(c[2] == {"beam_size": 3} for c in model.calls)


def test_corpus_bleu_scores_uses_all_references():
    data, texts = _data()
    model = LookupModel(["a red cat on a sofa", "a red dog on a mat", "a mat on a sofa"])
    scores = metrics.corpus_bleu_scores(model, data, num_images=10, progress=False)
    assert scores == {f"bleu{n}": 1.0 for n in range(1, 5)}
    wrong = LookupModel(["a dog on a sofa", "a red mat", "a cat"])
    scores = metrics.corpus_bleu_scores(wrong, data, num_images=3, progress=False)
    expected = metrics.corpus_bleu_1_to_4(texts, wrong.answers)
    assert scores == pytest.approx(expected)


def test_corpus_bleu_scores_subset_is_seeded():
    data, _ = _data()
    model = LookupModel(["a cat", "a dog", "a mat"])
    a = metrics.corpus_bleu_scores(model, data, num_images=2, seed=1, progress=False)
    b = metrics.corpus_bleu_scores(model, data, num_images=2, seed=1, progress=False)
    assert a == b
    assert sum(c[0] for c in model.calls) == 4


def test_bad_split():
    data, texts = _data()
    with pytest.raises(ValueError, match="split"):
        metrics.reference_bleu(LookupModel([]), data, split="test")


def test_model_captions_decode_like_cs231n():
    data, _ = _data()
    model = LookupModel(["a cat", "a dog", "a mat"])
    texts = metrics.model_captions(model, data["val_features"], VOCAB, batch_size=2, progress=False)
    assert texts == ["a cat <END>", "a dog <END>", "a mat <END>"]
    assert texts == decode_captions(model.sample(data["val_features"]), VOCAB)


@pytest.mark.parametrize("call, words", [
    # a caption given as a list of tokens instead of a string
    (lambda: metrics.unigram_bleu(["a", "cat"], "a cat"), "unigram_bleu: reference must be a "
                                                          "caption str"),
    (lambda: metrics.unigram_bleu("a cat", ["a", "cat"]), "unigram_bleu: candidate must be a "
                                                          "caption str"),
    (lambda: metrics.mean_unigram_bleu([["a", "cat"]], ["a cat"]), "mean_unigram_bleu: "
                                                                   "reference must be"),
    (lambda: metrics.corpus_bleu_1_to_4([[["a", "cat"]]], ["a cat"]),
     r"corpus_bleu_1_to_4: references\[0\]\[0\] must be a caption str"),
    (lambda: metrics.corpus_bleu_1_to_4([["a cat"]], [["a", "cat"]]),
     r"corpus_bleu_1_to_4: candidates\[0\] must be a caption str"),
    # one string where a list of captions belongs (it used to be scored letter by letter)
    (lambda: metrics.mean_unigram_bleu("a cat", "a cat"), "mean_unigram_bleu: references must "
                                                          "be a list of caption strings"),
    (lambda: metrics.corpus_bleu_1_to_4(["a cat"], ["a cat"]),
     r"corpus_bleu_1_to_4: references\[0\] must be a list of caption strings, got str 'a cat'"),
    (lambda: metrics.corpus_bleu_1_to_4([["a cat"]], "a cat"),
     "corpus_bleu_1_to_4: candidates must be a list"),
    (lambda: metrics.unigram_bleu("a cat", None), "candidate must be a caption str"),
])
def test_metrics_refuse_tokens_or_strings_in_the_wrong_place(call, words):
    with pytest.raises(TypeError, match=words):
        call()


def test_matthews_corrcoef_takes_binary_labels_only():
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    p = np.array([1, 0, 0, 1, 0, 1, 1, 0])
    want = cola_metrics.matthews_corrcoef(y, p)
    assert want == pytest.approx(np.corrcoef(y, p)[0, 1], abs=1e-12)
    assert cola_metrics.matthews_corrcoef(y.astype(bool), p.astype(np.float32)) == want
    assert cola_metrics.matthews_corrcoef(list(y), list(p)) == want
    probs = np.array([0.9, 0.2, 0.4, 0.8, 0.1, 0.6, 0.7, 0.3])
    with pytest.raises(ValueError, match=r"matthews_corrcoef: y_pred must hold only 0 and 1 .*"
                                         r"got 0\.9 at index 0; threshold probabilities first"):
        cola_metrics.matthews_corrcoef(y, probs)
    assert cola_metrics.matthews_corrcoef(y, probs >= 0.5) == want
    for bad in ([2, 0, 1, 1, 0, 0, 1, 0], [-1, 0, 1, 1, 0, 0, 1, 0]):
        with pytest.raises(ValueError, match="y_true must hold only 0 and 1"):
            cola_metrics.matthews_corrcoef(bad, p)
    with pytest.raises(TypeError, match="y_true must hold 0/1 .* got dtype <U"):
        cola_metrics.matthews_corrcoef(["1", "0"], [1, 0])


def test_matthews_corrcoef_is_the_one_in_the_transformer_module():
    pytest.importorskip("torch")
    with warnings.catch_warnings():   # the deprecated alias (its warning is tested in tests/cola)
        warnings.simplefilter("ignore", DeprecationWarning)
        transformer = importlib.import_module("fastrnn.transformer")
    assert transformer.matthews_corrcoef is cola_metrics.matthews_corrcoef
