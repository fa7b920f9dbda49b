"""CoLA (Corpus of Linguistic Acceptability) in the GLUE layout, ready for the Transformer.

A CoLA folder holds ``train.tsv`` and ``dev.tsv``: UTF-8, no header, four
tab-separated columns per line -- source, label (0/1), original mark, sentence.
Quotes are literal text (no CSV quoting).

``load_cola(data_dir)`` returns three splits as NumPy arrays:

* ``train``: 7,000 sentences of ``train.tsv`` (a seeded shuffle), to fit on;
* ``val``: the other 1,551, for model selection (early stopping, threshold);
* ``test``: all of ``dev.tsv``, held out -- the labelled CoLA test set is not public.

The vocabulary comes from the ``train`` split only, so ``val`` meets unseen
words as often as ``test`` does. Each sentence becomes ``[CLS]`` followed by its
tokens, truncated or padded with ``<pad>`` to ``max_length`` (43); words not in
the vocabulary become ``<unk>``.

Tokenisation (``tokenize``): lower-case, then split into runs of letters/digits
and single punctuation characters, so "Won't they?" -> ["won", "'", "t",
"they", "?"]. Simple and reversible enough for a from-scratch model.

Optional subwords (``load_cola(..., subwords=(3, 5))``): each token also gets
the ids of its character n-grams (fastText style: n-grams of ``<word>`` with
boundary marks), from an n-gram vocabulary built on the ``train`` split. A word
never seen in training is ``<unk>`` as a word but still has n-grams it shares
with training words ("sneezed" -> "<sn", "eez", "ed>", ...), which is what
dev's out-of-domain half, full of unseen words, needs.

This module needs only NumPy; the arrays go to torch in ``fastrnn.cola.training``.
"""
import csv
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastrnn import config

__all__ = [
    "PAD", "UNK", "CLS", "MAX_LENGTH", "ColaExample", "ColaSplit", "ColaData",
    "tokenize", "read_cola_tsv", "build_vocab", "encode", "find_cola_dir", "load_cola",
    "char_ngrams", "build_subword_vocab", "encode_subwords", "MAX_SUBWORDS", "SPLITS",
    "source_split",
]

PAD, UNK, CLS = "<pad>", "<unk>", "[CLS]"
MAX_LENGTH = 43
N_TRAIN = 7000
MAX_SUBWORDS = 24  # n-grams kept per token (the first ones: a long word's prefix n-grams)
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]|_")
_COLUMNS = ("source", "label", "original mark", "sentence")


@dataclass(frozen=True)
class ColaExample:
    source: str
    label: int
    mark: str
    sentence: str


@dataclass
class ColaSplit:
    """Encoded sentences: ids int64 (N, T), pad_mask bool (N, T), labels int64 (N,);
    subwords int64 (N, T, S) n-gram ids per token (0: none) when asked for, else None;
    features float32 (N, F) per-sentence features (``fastrnn.cola.lm``) when attached."""
    ids: np.ndarray
    pad_mask: np.ndarray
    labels: np.ndarray
    sentences: list
    subwords: np.ndarray = None
    features: np.ndarray = None

    def __len__(self):
        return len(self.labels)


@dataclass
class ColaData:
    word_to_ix: dict
    train: ColaSplit
    val: ColaSplit
    test: ColaSplit
    data_dir: Path
    subword_to_ix: dict = None   # n-gram -> id (0 is the empty slot) when subwords are on
    subword_range: tuple = None  # (n_min, n_max)


def tokenize(sentence):
    """Lower-cased word and punctuation tokens of one sentence."""
    return _TOKEN.findall(sentence.lower())


def read_cola_tsv(path):
    """Parse one GLUE-layout CoLA file into a list of ``ColaExample``.

    Raises FileNotFoundError for a missing file and ValueError naming the file,
    line and column of the first malformed record.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoLA file not found: {path} (a CoLA folder holds train.tsv "
                                f"and dev.tsv in the GLUE layout)")
    examples = []
    with open(path, encoding="utf-8", newline="") as f:
        try:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    for line_no, row in enumerate(rows, start=1):
        where = f"{path}, line {line_no}"
        if not row:
            raise ValueError(f"{where}: empty line; expected 4 tab-separated columns "
                             f"({', '.join(_COLUMNS)})")
        if len(row) != 4:
            raise ValueError(f"{where}: expected 4 tab-separated columns ({', '.join(_COLUMNS)}), "
                             f"got {len(row)}")
        source, label, mark, sentence = row
        if label not in ("0", "1"):
            raise ValueError(f"{where}, column 2 (label): expected 0 or 1, got {label!r}")
        if not sentence.strip():
            raise ValueError(f"{where}, column 4 (sentence): the sentence is empty")
        examples.append(ColaExample(source, int(label), mark, sentence))
    if not examples:
        raise ValueError(f"{path}: the file holds no records")
    return examples


def build_vocab(sentences, min_count=1):
    """Word -> id: ``<pad>``=0, ``<unk>``=1, ``[CLS]``=2, then words seen at least
    ``min_count`` times, most frequent first (ties alphabetical, so it is deterministic)."""
    if min_count < 1:
        raise ValueError(f"build_vocab: min_count must be >= 1, got {min_count}")
    counts = Counter(token for s in sentences for token in tokenize(s))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    vocab = {PAD: 0, UNK: 1, CLS: 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    return vocab


def encode(sentences, word_to_ix, max_length=MAX_LENGTH):
    """``[CLS]`` + tokens, truncated/padded to max_length.

    Returns ids int64 (N, max_length) and pad_mask bool (N, max_length), true at pads.
    """
    for token in (PAD, UNK, CLS):
        if token not in word_to_ix:
            raise ValueError(f"encode: word_to_ix must contain {token!r}")
    if max_length < 2:
        raise ValueError(f"encode: max_length must be >= 2 ([CLS] and one word), got {max_length}")
    unk = word_to_ix[UNK]
    ids = np.full((len(sentences), max_length), word_to_ix[PAD], dtype=np.int64)
    pad_mask = np.ones((len(sentences), max_length), dtype=bool)
    for i, sentence in enumerate(sentences):
        row = [word_to_ix[CLS]] + [word_to_ix.get(t, unk) for t in tokenize(sentence)]
        row = row[:max_length]
        ids[i, :len(row)] = row
        pad_mask[i, :len(row)] = False
    return ids, pad_mask


def char_ngrams(token, n_min=3, n_max=5):
    """Character n-grams of ``<token>``, shortest first, in reading order.

    ``[CLS]`` and other special tokens have none (they are not words).
    """
    if token in (PAD, UNK, CLS):
        return []
    marked = f"<{token}>"
    return [marked[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(marked) - n + 1)]


def build_subword_vocab(sentences, n_min=3, n_max=5, min_count=2):
    """n-gram -> id for n-grams of training words seen in at least ``min_count``
    word tokens; id 0 is reserved for "no n-gram" (padding), then most frequent first."""
    _check_ngram_range(n_min, n_max)
    if min_count < 1:
        raise ValueError(f"build_subword_vocab: min_count must be >= 1, got {min_count}")
    counts = Counter(g for s in sentences for token in tokenize(s)
                     for g in char_ngrams(token, n_min, n_max))
    grams = sorted((g for g, c in counts.items() if c >= min_count), key=lambda g: (-counts[g], g))
    return {"": 0, **{g: i for i, g in enumerate(grams, start=1)}}


def encode_subwords(sentences, subword_to_ix, n_min=3, n_max=5, max_length=MAX_LENGTH,
                    max_subwords=MAX_SUBWORDS):
    """n-gram ids of every token position, aligned with ``encode``'s ids.

    Returns int64 (N, max_length, max_subwords); 0 marks an empty slot ([CLS],
    pads, n-grams missing from the vocabulary, and slots past a token's last n-gram).
    """
    _check_ngram_range(n_min, n_max)
    if max_subwords < 1:
        raise ValueError(f"encode_subwords: max_subwords must be >= 1, got {max_subwords}")
    out = np.zeros((len(sentences), max_length, max_subwords), dtype=np.int64)
    cache = {}
    for i, sentence in enumerate(sentences):
        for t, token in enumerate(tokenize(sentence)[:max_length - 1], start=1):  # after [CLS]
            if token not in cache:
                known = [subword_to_ix[g] for g in char_ngrams(token, n_min, n_max)
                         if g in subword_to_ix]
                cache[token] = known[:max_subwords]
            out[i, t, :len(cache[token])] = cache[token]
    return out


def _check_ngram_range(n_min, n_max):
    if not (isinstance(n_min, int) and isinstance(n_max, int) and 1 <= n_min <= n_max):
        raise ValueError(f"character n-gram range must be integers 1 <= n_min <= n_max, "
                         f"got ({n_min!r}, {n_max!r})")


def source_split(examples, n_val, seed=0):
    """(train, val): val holds whole sources, about n_val examples.

    Sources are visited in a seeded random order; each joins val if that keeps
    val within 20% above n_val, until val reaches n_val. Both keep file order.
    """
    counts = Counter(e.source for e in examples)
    held, size = set(), 0
    for source in np.random.default_rng(seed).permutation(sorted(counts)):
        if size >= n_val:
            break
        if size + counts[source] <= 1.2 * n_val:
            held.add(source)
            size += counts[source]
    if not held or len(held) == len(counts):
        raise ValueError(f"source_split: cannot hold out whole sources for about {n_val} of "
                         f"{len(examples)} sentences ({len(counts)} sources)")
    return [e for e in examples if e.source not in held], \
        [e for e in examples if e.source in held]


COLA_URL = "https://nyu-mll.github.io/CoLA/"


def find_cola_dir(data_dir=None):
    """The CoLA folder to use: ``data_dir`` if given, else ``$FASTRNN_COLA``.

    The package never guesses a location: CoLA is published at ``COLA_URL``
    (also as part of GLUE); unpack it anywhere and point at the folder that holds
    ``train.tsv`` and ``dev.tsv``."""
    if data_dir is not None:
        return Path(data_dir)
    folder = config.get(config.COLA)
    if folder is not None:
        return Path(folder)
    raise FileNotFoundError(
        "no CoLA folder given: pass --data DIR (or data_dir=...) or set FASTRNN_COLA to a "
        f"folder holding train.tsv and dev.tsv (GLUE layout); CoLA is published at {COLA_URL}")


SPLITS = ("random", "source")


def load_cola(data_dir=None, max_length=MAX_LENGTH, n_train=N_TRAIN, split_seed=0,
              min_count=1, max_train=None, subwords=None, subword_min_count=2, split="random"):
    """Read, split and encode CoLA; see the module docstring.

    n_train: sentences of train.tsv to fit on (the rest is ``val``); split_seed
    seeds the shuffle that chooses them. split='source' instead holds out whole
    sources (train.tsv's first column, the book or paper a sentence comes from)
    for ``val``, about len - n_train sentences (``source_split``), so that
    validation meets unseen sources as dev's out-of-domain half does.
    max_train (optional) then keeps only the first max_train training
    sentences, for quick runs. subwords: None, or (n_min, n_max)
    to add character n-gram ids (vocabulary: n-grams of the train split seen
    ``subword_min_count`` times).
    """
    data_dir = find_cola_dir(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"CoLA folder not found: {data_dir}")
    train_all = read_cola_tsv(data_dir / "train.tsv")
    test = read_cola_tsv(data_dir / "dev.tsv")
    if not 1 <= n_train < len(train_all):
        raise ValueError(f"load_cola: n_train must be between 1 and {len(train_all) - 1} "
                         f"({data_dir / 'train.tsv'} holds {len(train_all)} sentences), "
                         f"got {n_train}")
    if split not in SPLITS:
        raise ValueError(f"load_cola: split must be one of {SPLITS}, got {split!r}")
    if split == "source":
        train, val = source_split(train_all, len(train_all) - n_train, split_seed)
    else:
        order = np.random.default_rng(split_seed).permutation(len(train_all))
        train = [train_all[i] for i in order[:n_train]]
        val = [train_all[i] for i in order[n_train:]]
    if max_train is not None:
        train = train[:max_train]
    word_to_ix = build_vocab([e.sentence for e in train], min_count=min_count)
    subword_to_ix = None
    if subwords is not None:
        subwords = tuple(subwords)
        subword_to_ix = build_subword_vocab([e.sentence for e in train], *subwords,
                                            min_count=subword_min_count)

    def split(examples):
        sentences = [e.sentence for e in examples]
        ids, pad_mask = encode(sentences, word_to_ix, max_length)
        labels = np.array([e.label for e in examples], dtype=np.int64)
        grams = None if subwords is None else \
            encode_subwords(sentences, subword_to_ix, *subwords, max_length=max_length)
        return ColaSplit(ids, pad_mask, labels, sentences, grams)

    return ColaData(word_to_ix, split(train), split(val), split(test), data_dir,
                    subword_to_ix, subwords)
