"""The CS231n COCO captioning folder: loading, minibatches, decoding.

A folder holds six files (the layout of the CS231n assignment, read unchanged):

    coco2014_captions.h5          train_captions (Nc,17) int, train_image_idxs (Nc,) int,
                                  val_captions, val_image_idxs (older copies spell it *_image_idxes)
    train2014_vgg16_fc7_pca.h5    features (Ni,512) float32   (PCA of VGG-16 fc7)
    val2014_vgg16_fc7_pca.h5      features
    train2014_vgg16_fc7.h5        features (Ni,4096) float32  (raw fc7, only for pca_features=False)
    val2014_vgg16_fc7.h5          features
    coco2014_vocab.json           {"idx_to_word": [...], "word_to_idx": {...}}
    train2014_urls.txt            one image URL per line, line i = feature row i
    val2014_urls.txt

``fastrnn.captioning.data.synthetic`` writes the same files from a generator.
"""
import contextlib
import json
import os

import h5py
import numpy as np

from fastrnn import config

SPLITS = ("train", "val")
CAPTIONS_FILE = "coco2014_captions.h5"
VOCAB_FILE = "coco2014_vocab.json"
REQUIRED_WORDS = ("<NULL>", "<START>", "<END>")

HOW_TO_GET_DATA = (
    "Point --data / $FASTRNN_DATA at the CS231n COCO captioning folder "
    "(coco_captioning/ from the CS231n assignment 3 get_coco_dataset.sh), or write a "
    "synthetic one with `fastrnn-data synth --out DIR`.")


def features_file(split, pca_features=True):
    return f"{split}2014_vgg16_fc7{'_pca' if pca_features else ''}.h5"


def urls_file(split):
    return f"{split}2014_urls.txt"


def load_coco_data(base_dir=None, max_train=None, pca_features=True, seed=None):
    """Read a COCO captioning folder into the CS231n data dict.

    Inputs:
    - base_dir: the folder; defaults to $FASTRNN_DATA.
    - max_train: keep this many training captions, drawn without replacement (all
      of them if the split is smaller) by ``np.random.default_rng(seed)``; with
      seed None, by a generator seeded from NumPy's global random state, so
      ``np.random.seed`` makes the subset repeat (as in CS231n). Data-parallel
      ranks must pass a seed: each process has its own global state.
    - pca_features: 512-d PCA features (True) or the raw 4096-d fc7 features.

    Returns a dict with train_captions / val_captions (Nc,17) int32, train_image_idxs /
    val_image_idxs (Nc,) int32 (row of the split's features), train_features /
    val_features (Ni,D) float32, idx_to_word (list), word_to_idx (dict), train_urls /
    val_urls (Ni,) str. Each file is read once straight into its array.

    Raises FileNotFoundError for a missing folder or file and ValueError for contents
    that do not fit together (dataset names, id ranges, vocabulary, URL counts).
    """
    base_dir = _resolve_base_dir(base_dir)
    data = {}
    vocab = _read_vocab(os.path.join(base_dir, VOCAB_FILE))
    data.update(vocab)
    captions = _read_captions(os.path.join(base_dir, CAPTIONS_FILE))
    for split in SPLITS:
        path = os.path.join(base_dir, features_file(split, pca_features))
        features = _read_features(path, pca_features)
        urls = _read_urls(os.path.join(base_dir, urls_file(split)))
        caps, idxs = captions[split]
        _check_captions(caps, idxs, len(vocab["idx_to_word"]), len(features), split, path)
        if len(urls) != len(features):
            raise ValueError(f"{os.path.join(base_dir, urls_file(split))} has {len(urls)} URLs "
                             f"but {path} has {len(features)} feature rows; line i must name the "
                             f"image of row i")
        data[f"{split}_captions"], data[f"{split}_image_idxs"] = caps, idxs
        data[f"{split}_features"], data[f"{split}_urls"] = features, urls
    if data["train_features"].shape[1] != data["val_features"].shape[1]:
        raise ValueError(f"train features are {data['train_features'].shape[1]}-d but val "
                         f"features are {data['val_features'].shape[1]}-d in {base_dir}")
    if max_train is not None:
        _subsample_train(data, max_train, seed)
    return data


def sample_coco_minibatch(data, batch_size=100, split="train", rng=None):
    """Draw ``batch_size`` captions of ``split`` at random (with replacement, as CS231n).

    ``rng``: a numpy Generator for reproducible draws; None uses np.random's global state.
    Returns captions (B,17), image_features (B,D), urls (B,).
    """
    if split not in SPLITS:
        raise ValueError(f"sample_coco_minibatch: split must be 'train' or 'val', got {split!r}")
    captions = data[f"{split}_captions"]
    if len(captions) == 0:
        raise ValueError(f"sample_coco_minibatch: the {split} split has no captions")
    draw = np.random.choice if rng is None else rng.choice
    mask = draw(len(captions), batch_size)
    image_idxs = data[f"{split}_image_idxs"][mask]
    return captions[mask], data[f"{split}_features"][image_idxs], data[f"{split}_urls"][image_idxs]


def decode_captions(captions, idx_to_word):
    """Token ids -> text: words up to and including <END>, <NULL> dropped.

    A 1-D caption gives one string, a 2-D batch (N,T) a list of N strings.
    ``idx_to_word`` is a list (ids 0..V-1) or a dict id -> word. An id that is
    not an integer, is negative or has no word raises ValueError (a list would
    otherwise wrap a negative id around).
    """
    captions = np.asarray(captions)
    if captions.ndim not in (1, 2):
        raise ValueError(f"decode_captions: captions must be 1-D or 2-D, got shape "
                         f"{captions.shape}")
    if captions.size and captions.dtype.kind not in "iu":
        raise TypeError(f"decode_captions: captions must hold integer token ids, got dtype "
                        f"{captions.dtype}")
    if isinstance(idx_to_word, dict):
        unknown = next((int(i) for i in np.unique(captions) if int(i) not in idx_to_word), None)
        if unknown is not None:
            raise ValueError(f"decode_captions: token id {unknown} is not a key of idx_to_word")
    else:
        bad = _outside(captions, len(idx_to_word))
        if bad is not None:
            raise ValueError(f"decode_captions: token id {bad} is outside the vocabulary "
                             f"[0, {len(idx_to_word)}) of idx_to_word")
    rows = [_decode_row(row, idx_to_word) for row in np.atleast_2d(captions)]
    return rows[0] if captions.ndim == 1 else rows


def _decode_row(row, idx_to_word):
    words = []
    for idx in row:
        word = idx_to_word[int(idx)]
        if word != "<NULL>":
            words.append(word)
        if word == "<END>":
            break
    return " ".join(words)


def seed_from_global_state():
    """A seed drawn from NumPy's global random state (``np.random.seed`` fixes it).

    What fastrnn draws with no explicit seed is seeded with this, so a CS231n
    notebook that calls ``np.random.seed(231)`` repeats, while the generator
    itself stays fastrnn's own (its state is what checkpoints save)."""
    return int(np.random.randint(0, 2**63 - 1, dtype=np.int64))


def _resolve_base_dir(base_dir):
    if base_dir is None:
        base_dir = config.get(config.DATA)
        if base_dir is None:
            raise FileNotFoundError("load_coco_data: no data folder given and $FASTRNN_DATA is "
                                    "not set. " + HOW_TO_GET_DATA)
    base_dir = os.fspath(base_dir)
    if not os.path.isdir(base_dir):
        raise FileNotFoundError(f"COCO data folder {base_dir} does not exist. " + HOW_TO_GET_DATA)
    return base_dir


def _require_file(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"missing COCO data file {path}. " + HOW_TO_GET_DATA)


def _read_vocab(path):
    _require_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(vocab, dict) or not {"idx_to_word", "word_to_idx"} <= vocab.keys():
        raise ValueError(f"{path} must be a JSON object with keys 'idx_to_word' and 'word_to_idx'")
    idx_to_word, word_to_idx = vocab["idx_to_word"], vocab["word_to_idx"]
    if not isinstance(idx_to_word, list) or not isinstance(word_to_idx, dict):
        raise ValueError(f"{path}: idx_to_word must be a list and word_to_idx an object")
    if len(idx_to_word) != len(word_to_idx):
        raise ValueError(f"{path}: idx_to_word has {len(idx_to_word)} words but word_to_idx "
                         f"has {len(word_to_idx)}")
    for i, word in enumerate(idx_to_word):
        if word_to_idx.get(word) != i:
            raise ValueError(f"{path}: idx_to_word[{i}] is {word!r} but word_to_idx[{word!r}] "
                             f"is {word_to_idx.get(word)!r}")
    missing = [w for w in REQUIRED_WORDS if w not in word_to_idx]
    if missing:
        raise ValueError(f"{path}: the vocabulary lacks the special tokens {missing}")
    return {"idx_to_word": idx_to_word, "word_to_idx": word_to_idx}


def _read_captions(path):
    """{split: (captions, image_idxs)} read straight from the h5 datasets."""
    _require_file(path)
    out = {}
    with _open_h5(path) as f:
        for split in SPLITS:
            cap_key = f"{split}_captions"
            idx_key = next((k for k in (f"{split}_image_idxs", f"{split}_image_idxes") if k in f),
                           None)
            if cap_key not in f or idx_key is None:
                raise ValueError(f"{path} must hold datasets '{cap_key}' and "
                                 f"'{split}_image_idxs' (or '{split}_image_idxes'); "
                                 f"it holds {sorted(f.keys())}")
            captions = _read_int_dataset(f, cap_key, path)
            idxs = _read_int_dataset(f, idx_key, path)
            if captions.ndim != 2 or idxs.ndim != 1 or len(idxs) != len(captions):
                raise ValueError(f"{path}: '{cap_key}' must be (Nc, T) and '{idx_key}' (Nc,), got "
                                 f"{captions.shape} and {idxs.shape}")
            out[split] = captions, idxs
    return out


def _read_int_dataset(f, key, path):
    ds = f[key]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "iu":
        raise ValueError(f"{path}: '{key}' must be an integer dataset, got "
                         f"{getattr(ds, 'dtype', type(ds).__name__)}")
    return _read_as(ds, np.int32)


def _read_features(path, pca_features):
    if not os.path.isfile(path):
        hint = "" if pca_features else (" Raw 4096-d features are optional; a synthetic folder "
                                         "has them only when written with --raw-features.")
        raise FileNotFoundError(f"missing COCO data file {path}.{hint} " + HOW_TO_GET_DATA)
    with _open_h5(path) as f:
        ds = f.get("features")
        if not isinstance(ds, h5py.Dataset):
            raise ValueError(f"{path} must hold a dataset 'features'; it holds {sorted(f.keys())}")
        if ds.ndim != 2 or ds.dtype.kind != "f":
            raise ValueError(f"{path}: 'features' must be a 2-D float array (Ni, D), got "
                             f"shape {ds.shape} dtype {ds.dtype}")
        return _read_as(ds, np.float32)


@contextlib.contextmanager
def _open_h5(path):
    """h5py.File(path, 'r'), with h5py's errors (truncated or non-HDF5 file) naming the file."""
    try:
        with h5py.File(path, "r") as f:
            yield f
    except (OSError, KeyError) as err:
        raise ValueError(f"{path} is not a readable HDF5 file (truncated or corrupted?): "
                         f"{err}") from None


def _read_as(ds, dtype):
    """The whole dataset as one array of ``dtype``, converted by HDF5 on read (no second copy)."""
    out = np.empty(ds.shape, dtype)
    if out.size:
        ds.read_direct(out)
    return out


def _read_urls(path):
    _require_file(path)
    with open(path, encoding="utf-8") as f:
        return np.asarray([line.strip() for line in f], dtype=str)


def _check_captions(captions, idxs, vocab_size, num_images, split, features_path):
    bad = _outside(captions, vocab_size)
    if bad is not None:
        raise ValueError(f"{split}_captions holds word id {bad}, outside the vocabulary "
                         f"[0, {vocab_size}) of {VOCAB_FILE}")
    bad = _outside(idxs, num_images)
    if bad is not None:
        raise ValueError(f"{split}_image_idxs holds image index {bad}, but {features_path} has "
                         f"{num_images} feature rows")


def _outside(a, high):
    """A value of a outside [0, high), or None."""
    if not a.size:
        return None
    lo, hi = a.min(), a.max()
    return int(lo) if lo < 0 else int(hi) if hi >= high else None


def _subsample_train(data, max_train, seed):
    if isinstance(max_train, bool) or not isinstance(max_train, (int, np.integer)) or max_train < 1:
        raise ValueError(f"load_coco_data: max_train must be a positive integer or None, "
                         f"got {max_train!r}")
    num_train = len(data["train_captions"])
    if max_train >= num_train:
        return
    rng = np.random.default_rng(seed_from_global_state() if seed is None else seed)
    keep = np.sort(rng.choice(num_train, max_train, replace=False))
    data["train_captions"] = data["train_captions"][keep]
    data["train_image_idxs"] = data["train_image_idxs"][keep]
