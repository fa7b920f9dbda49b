"""Language-model surprisal features for CoLA (Lau, Clark and Lappin 2017).

How probable a sentence is under a language model tells a lot about whether it
is acceptable. This module fits small word-level n-gram language models with
interpolated Kneser-Ney smoothing (pure Python, a second on CoLA) and turns each
sentence into a few numbers:

* for an LM fitted on the *acceptable* training sentences and one fitted on the
  *unacceptable* ones: mean token log-probability, lowest token log-probability
  and SLOR (log-probability minus unigram log-probability, per token);
* the log-likelihood ratio of the two LMs per token (a generative classifier's
  score: which kind of sentence does this one look like?);
* log length and the share of tokens unseen by the LM.

Training sentences get their features by cross-fitting (``lm_features``): the
LMs that score fold k are fitted on the other folds only, so the classifier
never sees in-sample (overfit) probabilities. Validation and test sentences are
scored by LMs fitted on the whole training split. Only training labels are used.
"""
import math
from collections import Counter, defaultdict

import numpy as np

from fastrnn.cola.data import tokenize

__all__ = ["KneserNeyLM", "sentence_scores", "lm_features", "FEATURE_NAMES"]

BOS, EOS, OOV = "<s>", "</s>", "<oov>"
FEATURE_NAMES = ("acc_mean", "acc_min", "acc_slor", "unacc_mean", "unacc_min", "unacc_slor",
                 "ratio_mean", "log_length", "oov_share")


class KneserNeyLM:
    """Interpolated Kneser-Ney word n-gram LM (Chen and Goodman 1999, one discount).

    sentences: token lists. Words seen fewer than ``min_count`` times become
    ``<oov>``, so unseen test words get that word's probability mass.
    """

    def __init__(self, sentences, order=3, discount=0.75, min_count=2):
        if order < 1:
            raise ValueError(f"KneserNeyLM: order must be >= 1, got {order}")
        if not 0 < discount < 1:
            raise ValueError(f"KneserNeyLM: discount must be in (0, 1), got {discount}")
        self.order, self.discount = order, discount
        counts = Counter(w for s in sentences for w in s)
        self.vocab = {w for w, c in counts.items() if c >= min_count} | {OOV, EOS}
        # counts[n][context][word]: raw counts at the top order, continuation
        # counts (number of distinct left extensions) below it.
        self.counts = [defaultdict(Counter) for _ in range(order)]
        seen = set()
        for s in sentences:
            words = [BOS] * (order - 1) + [self._word(w) for w in s] + [EOS]
            for i in range(order - 1, len(words)):
                for n in range(order):                  # n = context length
                    gram = tuple(words[i - n:i + 1])
                    if n == order - 1:
                        self.counts[n][gram[:-1]][gram[-1]] += 1
                    elif (words[i - n - 1],) + gram not in seen:
                        seen.add((words[i - n - 1],) + gram)
                        self.counts[n][gram[:-1]][gram[-1]] += 1
        self.totals = [{c: sum(f.values()) for c, f in level.items()} for level in self.counts]
        self.uniform = 1.0 / len(self.vocab)

    def _word(self, w):
        return w if w in self.vocab else OOV

    def prob(self, word, context):
        """P(word | the last order-1 words of context), context a tuple of words."""
        word = self._word(word)
        p = self.uniform
        for n in range(self.order):                     # lowest order first
            ctx = tuple(context[len(context) - n:]) if n else ()
            followers = self.counts[n].get(ctx)
            if not followers:
                continue
            total = self.totals[n][ctx]
            backoff = self.discount * len(followers) / total
            p = max(followers.get(word, 0) - self.discount, 0) / total + backoff * p
        return p

    def token_logprobs(self, tokens):
        """Natural-log probability of each token and of the end of the sentence."""
        # The context holds words as the counts do: <s> as is, unseen words as <oov>.
        context = [BOS] * (self.order - 1)
        out = []
        for w in list(tokens) + [EOS]:
            out.append(math.log(self.prob(w, tuple(context[len(context) - self.order + 1:])
                                          if self.order > 1 else ())))
            context.append(self._word(w))
        return np.array(out)

    def oov_share(self, tokens):
        return sum(w not in self.vocab for w in tokens) / max(1, len(tokens))


def sentence_scores(lm, unigram, tokens):
    """(mean log-prob, min log-prob, SLOR) of one sentence under lm; SLOR subtracts
    the unigram LM's log-probability, so rare words are not held against it."""
    logp = lm.token_logprobs(tokens)
    slor = (logp.sum() - unigram.token_logprobs(tokens).sum()) / len(logp)
    return logp.mean(), logp.min(), slor


def _fit_pair(tokens, labels, order):
    """(acceptable LM, its unigram LM, unacceptable LM, its unigram LM)."""
    acc = [t for t, y in zip(tokens, labels) if y == 1]
    unacc = [t for t, y in zip(tokens, labels) if y == 0]
    return (KneserNeyLM(acc, order), KneserNeyLM(acc, 1),
            KneserNeyLM(unacc, order), KneserNeyLM(unacc, 1))


def _features(models, tokens):
    acc, acc_uni, unacc, unacc_uni = models
    a = sentence_scores(acc, acc_uni, tokens)
    u = sentence_scores(unacc, unacc_uni, tokens)
    return [*a, *u, a[0] - u[0], math.log(len(tokens) + 1), acc.oov_share(tokens)]


def lm_features(train_sentences, train_labels, other_splits=(), folds=5, order=3, seed=0):
    """LM features float32 (N, 9) for the training split (cross-fitted over
    ``folds`` folds) and for each split of ``other_splits`` (LMs fitted on all of
    the training split). Returns [train_features, *other_features], unnormalised;
    columns as FEATURE_NAMES.
    """
    if folds < 2:
        raise ValueError(f"lm_features: folds must be >= 2, got {folds}")
    labels = np.asarray(train_labels)
    if len(labels) != len(train_sentences):
        raise ValueError(f"lm_features: {len(train_sentences)} sentences but "
                         f"{len(labels)} labels")
    tokens = [tokenize(s) for s in train_sentences]
    train = np.zeros((len(tokens), len(FEATURE_NAMES)), dtype=np.float32)
    fold_of = np.random.default_rng(seed).permutation(len(tokens)) % folds
    for k in range(folds):
        fit = fold_of != k
        models = _fit_pair([t for t, f in zip(tokens, fit) if f], labels[fit], order)
        for i in np.flatnonzero(~fit):
            train[i] = _features(models, tokens[i])
    models = _fit_pair(tokens, labels, order)
    others = [np.array([_features(models, tokenize(s)) for s in split], dtype=np.float32)
              for split in other_splits]
    return [train, *others]
