"""CaptioningRNN: known loss values, numeric gradients, greedy and beam decoding."""
import itertools

import numpy as np
import pytest

from fastrnn.captioning.model import CaptioningRNN
from fastrnn.gradcheck import eval_numerical_gradient

WORDS = ["<NULL>", "<START>", "<END>", "a", "cat", "dog", "sits"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
NULL, START, END = 0, 1, 2


def small_model(cell_type, seed=0, scale=0.5, dtype=np.float64, words=VOCAB, D=4, W=3, H=5):
    """A tiny model with weights large enough that its predictions are far from uniform."""
    model = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H,
                          cell_type=cell_type, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed + 100)
    for k, v in model.params.items():
        model.params[k] = (scale * rng.standard_normal(v.shape)).astype(dtype)
    return model


def caption_log_prob(model, feature, words):
    """log p(words | feature) by teacher forcing: minus the loss of that one caption."""
    caption = np.array([[START, *words]])
    return -float(model.loss(feature[None, :], caption)[0])


def generated_words(row):
    """The words of a sampled caption up to and including <END>."""
    row = list(row)
    return row[:row.index(END) + 1] if END in row else row


# ----------------------------------------------------------------- the loss

@pytest.mark.parametrize("cell_type, feature_range, expected", [
    ("rnn", (-1.5, 0.3), 9.83235591003),
    ("lstm", (-0.5, 1.7), 9.82445935443),
])
def test_loss_matches_cs231n_known_value(cell_type, feature_range, expected):
    # The CS231n notebook check: every parameter a linspace, 3-word vocabulary.
    N, D, W, H, T = 10, 20, 30, 40, 13
    words = {"<NULL>": 0, "<START>": 1, "<END>": 2}
    model = CaptioningRNN(words, input_dim=D, wordvec_dim=W, hidden_dim=H,
                          cell_type=cell_type, dtype=np.float64)
    for k, v in model.params.items():
        model.params[k] = np.linspace(-1.4, 1.3, num=v.size).reshape(*v.shape)
    features = np.linspace(*feature_range, num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % 3).reshape(N, T)
    loss, _ = model.loss(features, captions)
    assert abs(loss - expected) < 1e-9


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_loss_gradients_match_numeric(cell_type):
    model = small_model(cell_type)
    rng = np.random.default_rng(1)
    features = rng.standard_normal((3, 4))
    captions = rng.integers(0, len(VOCAB), size=(3, 6))
    captions[:, 0] = START
    captions[0, 4:] = NULL  # padding is masked out of the loss
    loss, grads = model.loss(features, captions)
    assert sorted(grads) == sorted(model.params)
    for name, param in model.params.items():
        numeric = eval_numerical_gradient(lambda _: model.loss(features, captions)[0], param,
                                          verbose=False)
        assert grads[name].shape == param.shape
        assert np.abs(numeric - grads[name]).max() < 1e-8, name
        # relative to the whole gradient: single near-zero entries would inflate rel_error
        diff = np.linalg.norm(numeric - grads[name]) / np.linalg.norm(numeric + grads[name])
        assert diff < 1e-7, name


def test_padding_does_not_change_the_loss():
    model = small_model("lstm")
    features = np.random.default_rng(2).standard_normal((1, 4))
    short = np.array([[START, 3, 4, END]])
    padded = np.array([[START, 3, 4, END, NULL, NULL]])
    assert model.loss(features, short)[0] == pytest.approx(model.loss(features, padded)[0], abs=1e-12)


def test_float32_model_trains_in_float32_and_casts_float64_features():
    model = CaptioningRNN(VOCAB, input_dim=4, wordvec_dim=3, hidden_dim=5, cell_type="lstm", seed=0)
    assert all(p.dtype == np.float32 for p in model.params.values())
    features = np.random.default_rng(3).standard_normal((2, 4))  # float64
    captions = np.array([[START, 3, END], [START, 4, END]], dtype=np.int32)
    loss, grads = model.loss(features, captions)
    assert np.isfinite(loss)
    assert all(g.dtype == np.float32 for g in grads.values())


def test_init_follows_the_spec_scales():
    V, D, W, H = len(VOCAB), 400, 300, 200
    model = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type="lstm", seed=0)
    p = model.params
    assert p["Wx"].shape == (W, 4 * H) and p["Wh"].shape == (H, 4 * H) and p["b"].shape == (4 * H,)
    assert p["W_vocab"].shape == (H, V) and p["W_embed"].shape == (V, W)
    for name, std in [("W_embed", 1 / 100), ("W_proj", 1 / np.sqrt(D)), ("Wx", 1 / np.sqrt(W)),
                      ("Wh", 1 / np.sqrt(H)), ("W_vocab", 1 / np.sqrt(H))]:
        assert p[name].std() == pytest.approx(std, rel=0.1), name
    for name in ("b_proj", "b", "b_vocab"):
        assert not p[name].any()
    same = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type="lstm", seed=0)
    assert all(np.array_equal(p[k], same.params[k]) for k in p)
    rnn = CaptioningRNN(VOCAB, input_dim=D, wordvec_dim=W, hidden_dim=H, cell_type="rnn")
    assert rnn.params["Wx"].shape == (W, H) and rnn.params["Wh"].shape == (H, H)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(cell_type="gru"), ValueError, "cell_type"),
    (dict(dtype=np.int32), TypeError, "dtype"),
    (dict(hidden_dim=0), ValueError, "hidden_dim"),
])
def test_bad_constructor_arguments(kwargs, error, words):
    with pytest.raises(error, match=words):
        CaptioningRNN(VOCAB, input_dim=4, **kwargs)


def test_vocabulary_needs_only_null():
    with pytest.raises(ValueError, match="<NULL>"):
        CaptioningRNN({"<START>": 0, "<END>": 1, "cat": 2})
    with pytest.raises(TypeError, match=r"word_to_idx\['<NULL>'\] must be an integer"):
        CaptioningRNN({"<NULL>": "0", "cat": 1})
    model = CaptioningRNN({"<NULL>": 0, "<START>": 1, "cat": 2}, input_dim=4, seed=0)
    assert model.params["W_vocab"].shape[1] == 3


@pytest.mark.parametrize("features, captions, error, words", [
    (np.zeros((2, 5)), np.ones((2, 4), int), ValueError, r"features must have shape \(N, D\)"),
    (np.zeros((2, 4), int), np.ones((2, 4), int), TypeError, "features must be floating"),
    (np.zeros((2, 4)), np.ones((3, 4), int), ValueError, "captions has 3 rows"),
    (np.zeros((2, 4)), np.ones((2, 4)), TypeError, "captions must hold integer"),
    (np.zeros((2, 4)), np.full((2, 4), 7), ValueError, r"token id 7, outside .*\[0, 7\)"),
    (np.zeros((2, 4)), np.ones((2, 1), int), ValueError, "T\\+1 >= 2"),
    ([[0.0] * 4], np.ones((1, 4), int), TypeError, "features must be a numpy.ndarray"),
])
def test_loss_rejects_bad_input(features, captions, error, words):
    with pytest.raises(error, match=words):
        small_model("rnn").loss(features, captions)


# ----------------------------------------------------------------- sampling

@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_greedy_sample_layout_and_scores(cell_type):
    # Over the words beam search generates: <NULL> would be masked out of the loss.
    model = small_model(cell_type, scale=1.0)
    features = np.random.default_rng(4).standard_normal((6, 4))
    captions, scores = model._sample_greedy(features, 8, every_word=False)
    assert captions.shape == (6, 8) and captions.dtype.kind == "i"
    assert not np.isin(captions, [START]).any()
    for n, row in enumerate(captions):
        words = generated_words(row)
        assert NULL not in words
        assert (row[len(words):] == NULL).all()      # <NULL> after <END>
        assert scores[n] == pytest.approx(caption_log_prob(model, features[n], words), abs=1e-9)


def test_greedy_matches_a_step_by_step_argmax():
    """Column 0 is the argmax word after <START>, and so on (over the beam's words;
    tests/captioning/test_assignment_compat.py checks sample against CS231n's loop)."""
    model = small_model("lstm", scale=1.0)
    features = np.random.default_rng(5).standard_normal((3, 4))
    captions, _ = model._sample_greedy(features, 6, every_word=False)
    for n in range(3):
        prefix = [START]
        for word in generated_words(captions[n]):
            # the greedy word is the most probable next word given the prefix
            best = max(range(2, len(VOCAB)),
                       key=lambda w: caption_log_prob(model, features[n], prefix[1:] + [w]))
            assert word == best
            prefix.append(word)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_beam_of_one_is_greedy(cell_type):
    model = small_model(cell_type, scale=1.0)
    features = np.random.default_rng(6).standard_normal((20, 4))
    greedy, greedy_scores = model._sample_greedy(features, 10, every_word=False)
    beam, beam_scores = model._beam_search(features, 10, 1, greedy_bound=False)
    np.testing.assert_array_equal(beam, greedy)
    np.testing.assert_allclose(beam_scores, greedy_scores, rtol=1e-12)
    np.testing.assert_array_equal(model.sample(features, max_length=10, beam_size=1),
                                  model._sample_greedy(features, 10)[0])


def exhaustive_best(model, feature, max_length):
    """The most probable caption of at most max_length words, by enumeration."""
    words = [w for w in range(len(VOCAB)) if w not in (NULL, START, END)]
    candidates = [list(seq) + [END] for n in range(max_length)
                  for seq in itertools.product(words, repeat=n)]
    candidates += [list(seq) for seq in itertools.product(words, repeat=max_length)]  # cut off
    return max((caption_log_prob(model, feature, c), c) for c in candidates)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_wide_beam_finds_the_most_probable_caption(cell_type):
    model = small_model(cell_type, scale=1.5, seed=3)
    features = np.random.default_rng(7).standard_normal((4, 4))
    max_length = 3
    beam, scores = model._beam_search(features, max_length, beam_size=64, greedy_bound=False)
    for n in range(4):
        best_score, best = exhaustive_best(model, features[n], max_length)
        assert generated_words(beam[n]) == best
        assert scores[n] == pytest.approx(best_score, abs=1e-9)


@pytest.mark.parametrize("cell_type", ["rnn", "lstm"])
def test_beam_never_less_probable_than_greedy(cell_type):
    model = small_model(cell_type, scale=1.5, seed=4)
    features = np.random.default_rng(8).standard_normal((30, 4))
    greedy, _ = model._sample_greedy(features, 12, every_word=False)
    improved = 0
    for beam_size in (2, 3, 5):
        beam = model.sample(features, max_length=12, beam_size=beam_size)
        for n in range(30):
            g = caption_log_prob(model, features[n], generated_words(greedy[n]))
            b = caption_log_prob(model, features[n], generated_words(beam[n]))
            assert b >= g - 1e-9
            improved += b > g + 1e-9
    assert improved > 0  # the beam does search: some captions beat greedy


def test_beam_search_is_batch_independent():
    model = small_model("lstm", scale=1.0)
    features = np.random.default_rng(9).standard_normal((7, 4))
    together = model.sample(features, max_length=10, beam_size=3)
    alone = np.concatenate([model.sample(features[n:n + 1], max_length=10, beam_size=3)
                            for n in range(7)])
    np.testing.assert_array_equal(together, alone)


@pytest.mark.parametrize("kwargs, words", [
    (dict(max_length=0), "max_length"), (dict(beam_size=0), "beam_size"),
    (dict(beam_size=2.5), "beam_size"),
])
def test_sample_rejects_bad_arguments(kwargs, words):
    with pytest.raises(ValueError, match=words):
        small_model("rnn").sample(np.zeros((1, 4)), **kwargs)
