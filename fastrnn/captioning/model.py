"""The image-captioning RNN/LSTM (CS231n ``CaptioningRNN``), plus beam search.

An image feature vector sets the initial hidden state; the caption is read
one word at a time; a vocabulary affine layer scores the next word:

    h0 = features @ W_proj + b_proj                      (N, H)
    x  = W_embed[captions[:, :-1]]                       (N, T, W)
    h  = rnn(x, h0) or lstm(x, h0)                       (N, T, H)
    scores = h @ W_vocab + b_vocab                       (N, T, V)
    loss = softmax cross-entropy against captions[:, 1:], <NULL> targets masked

Shapes: N images, T timesteps, D feature size, W word-vector size, H hidden
size, V vocabulary size.
"""
import numbers
import warnings

import numpy as np

from fastrnn import layers
from fastrnn._validate import FLOAT_DTYPES
from fastrnn.backends import REFERENCE, get_backend
from fastrnn.captioning import engine
from fastrnn.precision import get_precision

__all__ = ["CaptioningRNN"]

CELL_TYPES = engine.CELL_TYPES


class CaptioningRNN:
    """Image features -> caption, with a vanilla RNN or an LSTM.

    Parameters
    ----------
    word_to_idx : dict str -> int
        The vocabulary, as in CS231n: V = ``len(word_to_idx)``, and only
        ``<NULL>`` is required (its id masks padding out of the loss).
        ``<START>`` is needed by ``sample``, which stops a caption at ``<END>``
        when the vocabulary has one. Ids other than exactly 0..V-1 give a
        warning, not an error (the model's tables have V rows all the same).
    input_dim : int
        Size D of an image feature vector.
    wordvec_dim : int
        Size W of a word vector.
    hidden_dim : int
        Size H of the hidden state.
    cell_type : {'rnn', 'lstm'}
    dtype : numpy float dtype
        float32 for training, float64 for gradient checks.
    seed : int or None
        Seed of the weight initialisation (a fresh ``np.random.default_rng``).
        None (the default) draws from NumPy's global random state, in CS231n's
        order (``np.random.randn`` per parameter), so ``np.random.seed`` makes
        the weights, the original's included, repeat.

    ``params`` holds ``W_embed (V, W)``, ``W_proj (D, H)``, ``b_proj (H,)``,
    ``Wx (W, H or 4H)``, ``Wh (H, H or 4H)``, ``b (H or 4H,)``, ``W_vocab (H, V)``
    and ``b_vocab (V,)``; LSTM gate blocks are ordered i, f, o, g.
    """

    def __init__(self, word_to_idx, input_dim=512, wordvec_dim=128, hidden_dim=128,
                 cell_type="rnn", dtype=np.float32, seed=None):
        if cell_type not in CELL_TYPES:
            raise ValueError(f"CaptioningRNN: cell_type must be one of {CELL_TYPES}, "
                             f"got {cell_type!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"CaptioningRNN: dtype must be float32 or float64, got {self.dtype}")
        for name, value in (("input_dim", input_dim), ("wordvec_dim", wordvec_dim),
                            ("hidden_dim", hidden_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CaptioningRNN: {name} must be a positive integer, got {value!r}")
        _check_vocabulary(word_to_idx)

        self.cell_type = cell_type
        self.word_to_idx = dict(word_to_idx)
        self.idx_to_word = {i: w for w, i in self.word_to_idx.items()}
        self.input_dim = int(input_dim)
        self.wordvec_dim = int(wordvec_dim)
        self.hidden_dim = int(hidden_dim)
        self._null = int(self.word_to_idx["<NULL>"])
        self._start = self.word_to_idx.get("<START>")
        end = self.word_to_idx.get("<END>")
        self._end = int(end) if _is_id(end, self.vocab_size) else -1   # -1: no early stop
        # The legacy global RandomState is what CS231n's np.random.randn draws from.
        rng = np.random.mtrand._rand if seed is None else np.random.default_rng(seed)
        self.params = self._init_params(rng)

    @property
    def vocab_size(self):
        return len(self.word_to_idx)

    def config(self):
        """Everything needed to rebuild this model, except its weights (see fastrnn.captioning.checkpoint)."""
        return {"word_to_idx": dict(self.word_to_idx), "input_dim": self.input_dim,
                "wordvec_dim": self.wordvec_dim, "hidden_dim": self.hidden_dim,
                "cell_type": self.cell_type, "dtype": self.dtype.name}

    def _init_params(self, rng):
        V, D, W, H = self.vocab_size, self.input_dim, self.wordvec_dim, self.hidden_dim
        G = 4 * H if self.cell_type == "lstm" else H  # the LSTM stacks its 4 gates side by side

        def randn(*shape, scale):
            return (rng.standard_normal(shape) / scale).astype(self.dtype)

        return {
            "W_embed": randn(V, W, scale=100),
            "W_proj": randn(D, H, scale=np.sqrt(D)),
            "b_proj": np.zeros(H, dtype=self.dtype),
            "Wx": randn(W, G, scale=np.sqrt(W)),
            "Wh": randn(H, G, scale=np.sqrt(H)),
            "b": np.zeros(G, dtype=self.dtype),
            "W_vocab": randn(H, V, scale=np.sqrt(H)),
            "b_vocab": np.zeros(V, dtype=self.dtype),
        }

    # ----------------------------------------------------------------- training

    def loss(self, features, captions):
        """Training loss and gradients for one minibatch.

        features (N, D) float; captions int (N, T+1), each row ``<START>`` w1 ...
        ``<END>`` then ``<NULL>`` padding. Returns ``(loss, grads)``, ``grads``
        holding a gradient for every key of ``params``.
        """
        features, captions = self._check_batch(features, captions)
        # A <NULL> id outside [0, V) masks nothing (no caption can hold it); the fused
        # path wants a real row for it, so that vocabulary runs on the reference.
        null_in_range = 0 <= self._null < self.vocab_size
        bf16 = get_precision() == "bf16" and self.dtype == np.float32
        if (get_backend() != REFERENCE or bf16) and null_in_range:
            # The fused path (fastrnn.captioning.engine) on the active backend's kernels; equal to
            # the reference, which the NumPy backend keeps running for readability.
            # Mixed precision (fastrnn.precision) exists on the fused path only, so
            # under 'bf16' it runs on the NumPy backend's kernels too.
            return engine.captioning_loss(self.params, features, captions,
                                          null_idx=self._null, cell_type=self.cell_type)
        return self._loss_reference(features, captions)

    def _check_batch(self, features, captions):
        """Validate one minibatch; features are cast to the model dtype."""
        features = self._check_features("CaptioningRNN.loss", features)
        if not isinstance(captions, np.ndarray):
            raise TypeError(f"CaptioningRNN.loss: captions must be a numpy.ndarray of token ids, "
                            f"got {type(captions).__name__}")
        if captions.ndim != 2 or captions.shape[1] < 2:
            raise ValueError(f"CaptioningRNN.loss: captions must have shape (N, T+1) with "
                             f"T+1 >= 2 (<START> and at least one target), got {captions.shape}")
        if captions.shape[0] != features.shape[0]:
            raise ValueError(f"CaptioningRNN.loss: captions has {captions.shape[0]} rows but "
                             f"features has {features.shape[0]}; one caption per feature row")
        if captions.dtype.kind not in "iu":
            raise TypeError(f"CaptioningRNN.loss: captions must hold integer token ids, "
                            f"got dtype {captions.dtype}")
        if captions.size and (captions.min() < 0 or captions.max() >= self.vocab_size):
            bad = captions.min() if captions.min() < 0 else captions.max()
            raise ValueError(f"CaptioningRNN.loss: captions holds token id {bad}, outside the "
                             f"vocabulary range [0, {self.vocab_size})")
        return features, captions

    def _check_features(self, fn, features):
        if not isinstance(features, np.ndarray):
            raise TypeError(f"{fn}: features must be a numpy.ndarray, "
                            f"got {type(features).__name__}")
        if features.ndim != 2 or features.shape[1] != self.input_dim:
            raise ValueError(f"{fn}: features must have shape (N, D) with D = input_dim = "
                             f"{self.input_dim}, got {features.shape}")
        if features.dtype.kind != "f":
            raise TypeError(f"{fn}: features must be floating point (cast to the model dtype "
                            f"{self.dtype}), got {features.dtype}")
        return features.astype(self.dtype, copy=False)

    def _loss_reference(self, features, captions):
        """The readable reference: one fastrnn.layers call per stage."""
        p = self.params
        captions_in = captions[:, :-1]   # (N, T) fed to the network
        captions_out = captions[:, 1:]   # (N, T) the word to predict at each step
        mask = captions_out != self._null

        h0, cache_proj = layers.affine_forward(features, p["W_proj"], p["b_proj"])
        x, cache_embed = layers.word_embedding_forward(captions_in, p["W_embed"])
        recurrent_forward, recurrent_backward = (
            (layers.lstm_forward, layers.lstm_backward) if self.cell_type == "lstm"
            else (layers.rnn_forward, layers.rnn_backward))
        h, cache_rnn = recurrent_forward(x, h0, p["Wx"], p["Wh"], p["b"])
        scores, cache_vocab = layers.temporal_affine_forward(h, p["W_vocab"], p["b_vocab"])
        loss, dscores = layers.temporal_softmax_loss(scores, captions_out, mask)

        grads = {}
        dh, grads["W_vocab"], grads["b_vocab"] = layers.temporal_affine_backward(
            dscores, cache_vocab)
        dx, dh0, grads["Wx"], grads["Wh"], grads["b"] = recurrent_backward(dh, cache_rnn)
        grads["W_embed"] = layers.word_embedding_backward(dx, cache_embed)
        _, grads["W_proj"], grads["b_proj"] = layers.affine_backward(dh0, cache_proj)
        return loss, grads

    # ----------------------------------------------------------------- sampling

    def sample(self, features, max_length=30, beam_size=1):
        """Caption images: greedy decoding, or beam search when ``beam_size > 1``.

        features (N, D) -> captions int (N, max_length). Column 0 holds the
        first word generated after ``<START>``. A row ends at its ``<END>``
        token; every position after it is ``<NULL>``. A caption that reaches
        ``max_length`` without ``<END>`` is cut there.

        Greedy decoding is CS231n's: ``<START>`` is fed first, and each step
        takes the argmax over the whole vocabulary (``<NULL>`` and ``<START>``
        included) and feeds it back, so with the same weights the captions are
        the original's (up to its ``<END>``; the original keeps generating
        after it).

        Beam search keeps the ``beam_size`` most probable partial captions,
        scores a caption by the sum of its words' log-probabilities, and stops
        for an image as soon as no unfinished caption can still beat its best
        finished one (log-probabilities only fall as a caption grows). It never
        generates ``<NULL>`` or ``<START>`` (they are never training targets).
        The greedy caption over the same words is a candidate too, so a beam
        never returns a caption less probable than that one.

        Raises ValueError if the vocabulary has no ``<START>``.
        """
        features = self._check_features("CaptioningRNN.sample", features)
        if self._start is None:
            raise ValueError("CaptioningRNN.sample: word_to_idx has no '<START>' token; "
                             "sampling feeds <START> first, so the vocabulary needs one")
        if not _is_id(self._start, self.vocab_size):
            raise ValueError(f"CaptioningRNN.sample: the id of '<START>' is "
                             f"{self._start!r}; it must be a token id in "
                             f"[0, {self.vocab_size}) to be fed to the network")
        for name, value in (("max_length", max_length), ("beam_size", beam_size)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CaptioningRNN.sample: {name} must be a positive integer, "
                                 f"got {value!r}")
        if beam_size == 1:
            return self._sample_greedy(features, max_length)[0]
        return self._beam_search(features, max_length, beam_size)[0]

    def _initial_state(self, features):
        h0, _ = layers.affine_forward(features, self.params["W_proj"], self.params["b_proj"])
        return h0, np.zeros_like(h0)

    def _step(self, words, h, c):
        """Feed one word per row. words int (M,), h, c (M, H) -> next h, c and
        log-probabilities (M, V) of the following word, in float64."""
        p = self.params
        x = p["W_embed"][words]
        if self.cell_type == "lstm":
            h, c, _ = layers.lstm_step_forward(x, h, c, p["Wx"], p["Wh"], p["b"])
        else:
            h, _ = layers.rnn_step_forward(x, h, p["Wx"], p["Wh"], p["b"])
        scores, _ = layers.affine_forward(h, p["W_vocab"], p["b_vocab"])
        scores = scores.astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        return h, c, log_probs

    def _never_generated(self, log_probs):
        """Rule out, in place, the words beam search never generates (<NULL>, <START>).

        Done after normalising over the whole vocabulary, so that a caption's
        score stays its true log-probability under the model."""
        log_probs[:, [w for w in (self._null, self._start)
                      if _is_id(w, self.vocab_size)]] = -np.inf
        return log_probs

    def _sample_greedy(self, features, max_length, every_word=True):
        """-> captions int (N, max_length), log-probabilities float64 (N,).

        ``every_word``: argmax over the whole vocabulary (CS231n); False leaves
        out the words that beam search never generates."""
        N = features.shape[0]
        captions = np.full((N, max_length), self._null, dtype=np.int64)
        log_prob = np.zeros(N)
        done = np.zeros(N, dtype=bool)
        words = np.full(N, self._start)
        h, c = self._initial_state(features)
        for t in range(max_length):
            h, c, log_probs = self._step(words, h, c)
            if not every_word:
                log_probs = self._never_generated(log_probs)
            words = log_probs.argmax(axis=1)
            log_prob += np.where(done, 0.0, log_probs[np.arange(N), words])
            captions[:, t] = np.where(done, self._null, words)
            done |= words == self._end
            if done.all():
                break
        return captions, log_prob

    def _beam_search(self, features, max_length, beam_size, greedy_bound=True):
        """-> captions int (N, max_length), log-probabilities float64 (N,).

        All images and beams advance together as rows of one batch; an image
        drops out of the batch once its search is over. Finished captions leave
        the beam, which shrinks by one for each, so beam_size=1 is greedy
        decoding over the same words. ``greedy_bound`` starts every image with
        that greedy caption as the best finished one.
        """
        N, K, V = features.shape[0], beam_size, self.vocab_size
        if greedy_bound:
            best, best_score = self._sample_greedy(features, max_length, every_word=False)
        else:
            best = np.full((N, max_length), self._null, dtype=np.int64)
            best_score = np.full(N, -np.inf)

        images = np.arange(N)                       # (A,) images still searching
        live = np.full(N, K)                        # (A,) beam width left per image
        score = np.full((N, K), -np.inf)            # (A, K) log-prob of each hypothesis
        score[:, 0] = 0.0                           # one empty hypothesis to start from
        seqs = np.zeros((N, K, 0), dtype=np.int64)  # (A, K, t) words so far
        h0, c0 = self._initial_state(features)
        h, c = np.repeat(h0, K, axis=0), np.repeat(c0, K, axis=0)  # (A*K, H), row a*K + k
        words = np.full(N * K, self._start)

        for t in range(max_length):
            h, c, log_probs = self._step(words, h, c)
            log_probs = self._never_generated(log_probs)
            A = len(images)
            candidates = (score[:, :, None] + log_probs.reshape(A, K, V)).reshape(A, K * V)
            top = np.argpartition(-candidates, K - 1, axis=1)[:, :K]
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(candidates, top, 1), 1), 1)
            top_score = np.take_along_axis(candidates, top, axis=1)          # (A, K), best first
            parent, word = top // V, top % V
            seqs = np.concatenate([np.take_along_axis(seqs, parent[:, :, None], axis=1),
                                   word[:, :, None]], axis=2)

            taken = (np.arange(K) < live[:, None]) & np.isfinite(top_score)
            ends = taken & ((word == self._end) | (t == max_length - 1))
            finished_score = np.where(ends, top_score, -np.inf)
            j = finished_score.argmax(axis=1)
            rows = np.arange(A)
            improved = finished_score[rows, j] > best_score[images]
            best[images[improved], :t + 1] = seqs[rows[improved], j[improved]]
            best[images[improved], t + 1:] = self._null
            best_score[images[improved]] = finished_score[rows[improved], j[improved]]

            live = live - ends.sum(axis=1)
            score = np.where(taken & ~ends, top_score, -np.inf)
            searching = (live > 0) & (score.max(axis=1) > best_score[images])
            if not searching.any():
                break
            keep = np.flatnonzero(searching)
            images, live, score, seqs = images[keep], live[keep], score[keep], seqs[keep]
            state_rows = (keep[:, None] * K + parent[keep]).ravel()
            h, c = h[state_rows], c[state_rows]
            words = word[keep].ravel()
        return best, best_score


def _is_id(value, size):
    """True for an integer token id in [0, size)."""
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and 0 <= value < size)


def _check_vocabulary(word_to_idx):
    """As in CS231n, only <NULL> is required; ids that are not 0..V-1 are warned about."""
    if not isinstance(word_to_idx, dict) or not word_to_idx:
        raise TypeError(f"CaptioningRNN: word_to_idx must be a non-empty dict word -> id, "
                        f"got {type(word_to_idx).__name__}")
    if "<NULL>" not in word_to_idx:
        raise ValueError("CaptioningRNN: word_to_idx lacks '<NULL>', the padding token whose "
                         "id masks the loss")
    null = word_to_idx["<NULL>"]
    if not isinstance(null, numbers.Integral) or isinstance(null, bool):
        raise TypeError(f"CaptioningRNN: word_to_idx['<NULL>'] must be an integer id, "
                        f"got {null!r}")
    ids = list(word_to_idx.values())
    V = len(ids)
    if not all(_is_id(i, V) for i in ids) or len(set(ids)) != V:
        warnings.warn(f"CaptioningRNN: word_to_idx ids are not exactly 0..{V - 1}; the model "
                      f"has V = len(word_to_idx) = {V} rows per vocabulary table, and captions "
                      f"must hold ids in [0, {V})", stacklevel=3)
