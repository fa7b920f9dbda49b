"""The COCO folder loader, minibatches and decoding, against generated (tiny) folders."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from fastrnn.captioning.data import (
    decode_captions,
    load_coco_data,
    sample_coco_minibatch,
    synthetic,
)
from fastrnn.cli.data import main as data_main

ALL_FILES = ["coco2014_captions.h5", "coco2014_vocab.json", "train2014_vgg16_fc7_pca.h5",
             "val2014_vgg16_fc7_pca.h5", "train2014_urls.txt", "val2014_urls.txt"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco") / "tiny"
    synthetic.generate(folder, size="tiny", seed=0, raw_features=True, progress=False)
    return folder


@pytest.fixture
def copy_dir(tiny_dir, tmp_path):
    """A private copy of the tiny folder, free to corrupt."""
    return shutil.copytree(tiny_dir, tmp_path / "copy")


def _rewrite_h5(path, edit):
    """Rewrite an h5 file with edit({name: array}) -> {name: array}."""
    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in f}
    arrays = edit(arrays)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def _raw_h5(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def test_load_matches_the_files(tiny_dir):
    data = load_coco_data(tiny_dir)
    caps = _raw_h5(tiny_dir / "coco2014_captions.h5")
    info = json.loads((tiny_dir / "synthetic_info.json").read_text())
    for split in ("train", "val"):
        assert data[f"{split}_captions"].dtype == np.int32
        assert data[f"{split}_captions"].shape == (info[f"{split}_captions"], 17)
        np.testing.assert_array_equal(data[f"{split}_captions"], caps[f"{split}_captions"])
        np.testing.assert_array_equal(data[f"{split}_image_idxs"], caps[f"{split}_image_idxs"])
        feats = data[f"{split}_features"]
        assert feats.dtype == np.float32 and feats.shape == (info[f"{split}_images"], 512)
        np.testing.assert_array_equal(feats, _raw_h5(tiny_dir / f"{split}2014_vgg16_fc7_pca.h5")["features"])
        urls = (tiny_dir / f"{split}2014_urls.txt").read_text().split()
        assert data[f"{split}_urls"].tolist() == urls and len(urls) == len(feats)
    vocab = json.loads((tiny_dir / "coco2014_vocab.json").read_text())
    assert data["idx_to_word"] == vocab["idx_to_word"] and data["word_to_idx"] == vocab["word_to_idx"]


def test_raw_features(tiny_dir):
    data = load_coco_data(tiny_dir, pca_features=False)
    assert data["train_features"].shape == (data["train_urls"].shape[0], 4096)
    assert data["val_features"].dtype == np.float32
    assert (data["train_features"] >= 0).all()      # relu, like fc7


def test_old_index_key_spelling(copy_dir):
    expected = load_coco_data(copy_dir)
    _rewrite_h5(copy_dir / "coco2014_captions.h5",
                lambda a: {k.replace("_idxs", "_idxes"): v for k, v in a.items()})
    assert "train_image_idxes" in _raw_h5(copy_dir / "coco2014_captions.h5")
    data = load_coco_data(copy_dir)
    for split in ("train", "val"):
        np.testing.assert_array_equal(data[f"{split}_image_idxs"], expected[f"{split}_image_idxs"])


def test_int64_files_load_as_int32(copy_dir):
    _rewrite_h5(copy_dir / "coco2014_captions.h5",
                lambda a: {k: v.astype(np.int64) for k, v in a.items()})
    data = load_coco_data(copy_dir)
    assert data["train_captions"].dtype == np.int32 and data["val_image_idxs"].dtype == np.int32


def test_base_dir_from_environment(tiny_dir, monkeypatch):
    monkeypatch.setenv("FASTRNN_DATA", str(tiny_dir))
    assert len(load_coco_data()["train_captions"]) == 1500


def test_no_base_dir_anywhere(monkeypatch):
    monkeypatch.delenv("FASTRNN_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"FASTRNN_DATA.*fastrnn-data synth --out DIR"):
        load_coco_data()


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*fastrnn-data synth"):
        load_coco_data(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ALL_FILES + ["train2014_vgg16_fc7.h5"])
def test_missing_file(copy_dir, name):
    os.remove(copy_dir / name)
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        load_coco_data(copy_dir, pca_features=name != "train2014_vgg16_fc7.h5")


def test_missing_raw_features_hint(tmp_path):
    synthetic.generate(tmp_path / "d", size=40, progress=False)
    with pytest.raises(FileNotFoundError, match="--raw-features"):
        load_coco_data(tmp_path / "d", pca_features=False)


def test_wrong_caption_dataset_name(copy_dir):
    _rewrite_h5(copy_dir / "coco2014_captions.h5",
                lambda a: {k.replace("val_captions", "val_caps"): v for k, v in a.items()})
    with pytest.raises(ValueError, match="val_captions"):
        load_coco_data(copy_dir)


def test_missing_index_dataset(copy_dir):
    _rewrite_h5(copy_dir / "coco2014_captions.h5",
                lambda a: {k: v for k, v in a.items() if k != "train_image_idxs"})
    with pytest.raises(ValueError, match="train_image_idxs"):
        load_coco_data(copy_dir)


def test_wrong_features_dataset_name(copy_dir):
    _rewrite_h5(copy_dir / "val2014_vgg16_fc7_pca.h5", lambda a: {"feats": a["features"]})
    with pytest.raises(ValueError, match="'features'"):
        load_coco_data(copy_dir)


def test_float_captions_rejected(copy_dir):
    _rewrite_h5(copy_dir / "coco2014_captions.h5",
                lambda a: {k: v.astype(float) if k == "train_captions" else v for k, v in a.items()})
    with pytest.raises(ValueError, match="integer"):
        load_coco_data(copy_dir)


def test_caption_ids_beyond_vocabulary(copy_dir):
    def edit(a):
        a["val_captions"][3, 4] = 1004
        return a
    _rewrite_h5(copy_dir / "coco2014_captions.h5", edit)
    with pytest.raises(ValueError, match="val_captions holds word id 1004.*1004"):
        load_coco_data(copy_dir)


def test_negative_ids(copy_dir):
    def edit(a):
        a["train_captions"][0, 0] = -1
        return a
    _rewrite_h5(copy_dir / "coco2014_captions.h5", edit)
    with pytest.raises(ValueError, match="word id -1"):
        load_coco_data(copy_dir)


def test_image_idxs_beyond_features(copy_dir):
    def edit(a):
        a["train_image_idxs"][0] = 310
        return a
    _rewrite_h5(copy_dir / "coco2014_captions.h5", edit)
    with pytest.raises(ValueError, match="image index 310.*310 feature rows"):
        load_coco_data(copy_dir)


def test_caption_and_index_counts_differ(copy_dir):
    _rewrite_h5(copy_dir / "coco2014_captions.h5",
                lambda a: {k: v[:-1] if k == "val_image_idxs" else v for k, v in a.items()})
    with pytest.raises(ValueError, match="val_image_idxs"):
        load_coco_data(copy_dir)


def _edit_vocab(folder, edit):
    path = folder / "coco2014_vocab.json"
    vocab = json.loads(path.read_text())
    path.write_text(json.dumps(edit(vocab)))


def test_vocab_mapping_inconsistent(copy_dir):
    def swap(v):
        v["word_to_idx"]["a"], v["word_to_idx"]["the"] = v["word_to_idx"]["the"], v["word_to_idx"]["a"]
        return v
    _edit_vocab(copy_dir, swap)
    with pytest.raises(ValueError, match="idx_to_word"):
        load_coco_data(copy_dir)


def test_vocab_lengths_differ(copy_dir):
    def drop(v):
        v["idx_to_word"].pop()
        return v
    _edit_vocab(copy_dir, drop)
    with pytest.raises(ValueError, match="1003 words but word_to_idx has 1004"):
        load_coco_data(copy_dir)


def test_vocab_without_special_tokens(copy_dir):
    def rename(v):
        v["idx_to_word"][1] = "<BOS>"
        v["word_to_idx"] = {w: i for i, w in enumerate(v["idx_to_word"])}
        return v
    _edit_vocab(copy_dir, rename)
    with pytest.raises(ValueError, match="<START>"):
        load_coco_data(copy_dir)


def test_vocab_not_json(copy_dir):
    (copy_dir / "coco2014_vocab.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_coco_data(copy_dir)


def test_vocab_missing_key(copy_dir):
    _edit_vocab(copy_dir, lambda v: {"idx_to_word": v["idx_to_word"]})
    with pytest.raises(ValueError, match="word_to_idx"):
        load_coco_data(copy_dir)


def test_url_count_mismatch(copy_dir):
    path = copy_dir / "val2014_urls.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-2]))
    with pytest.raises(ValueError, match="150 URLs.*152 feature rows"):
        load_coco_data(copy_dir)


def test_feature_dims_disagree(copy_dir):
    _rewrite_h5(copy_dir / "val2014_vgg16_fc7_pca.h5", lambda a: {"features": a["features"][:, :100]})
    with pytest.raises(ValueError, match="512-d.*100-d"):
        load_coco_data(copy_dir)


def test_max_train_subsamples_without_replacement(tiny_dir):
    full = load_coco_data(tiny_dir)
    pairs = {(tuple(c), i) for c, i in zip(full["train_captions"].tolist(),
                                           full["train_image_idxs"].tolist())}
    sub = load_coco_data(tiny_dir, max_train=200, seed=0)
    assert sub["train_captions"].shape == (200, 17) and sub["train_image_idxs"].shape == (200,)
    chosen = [(tuple(c), i) for c, i in zip(sub["train_captions"].tolist(),
                                            sub["train_image_idxs"].tolist())]
    assert set(chosen) <= pairs                          # real (caption, image) pairs
    rows = [np.flatnonzero((full["train_captions"] == c).all(1) & (full["train_image_idxs"] == i))
            for c, i in zip(sub["train_captions"], sub["train_image_idxs"])]
    assert len({int(r[0]) for r in rows}) == 200         # 200 distinct rows of the file
    np.testing.assert_array_equal(sub["val_captions"], full["val_captions"])   # val untouched
    assert sub["train_features"].shape == full["train_features"].shape
    again = load_coco_data(tiny_dir, max_train=200, seed=0)
    np.testing.assert_array_equal(again["train_captions"], sub["train_captions"])
    other = load_coco_data(tiny_dir, max_train=200, seed=1)
    assert not np.array_equal(other["train_captions"], sub["train_captions"])


def test_max_train_without_a_seed_follows_np_random_seed(tiny_dir):
    """As in CS231n, np.random.seed makes the subset repeat when no seed is given."""
    np.random.seed(231)
    a = load_coco_data(tiny_dir, max_train=200)
    np.random.seed(231)
    b = load_coco_data(tiny_dir, max_train=200)
    np.random.seed(232)
    c = load_coco_data(tiny_dir, max_train=200)
    np.testing.assert_array_equal(a["train_captions"], b["train_captions"])
    np.testing.assert_array_equal(a["train_image_idxs"], b["train_image_idxs"])
    assert not np.array_equal(a["train_captions"], c["train_captions"])


def test_max_train_edge_cases(tiny_dir):
    assert len(load_coco_data(tiny_dir, max_train=10**6)["train_captions"]) == 1500
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_train"):
            load_coco_data(tiny_dir, max_train=bad)


def _indexed_data(num_images=7, num_captions=30):
    """A data dict where image i's features and url encode i and caption j encodes its image."""
    rng = np.random.default_rng(0)
    image_idxs = rng.integers(0, num_images, num_captions).astype(np.int32)
    captions = np.zeros((num_captions, 17), np.int32)
    captions[:, 0] = image_idxs
    data = {}
    for split in ("train", "val"):
        data[f"{split}_captions"], data[f"{split}_image_idxs"] = captions, image_idxs
        data[f"{split}_features"] = np.repeat(np.arange(num_images, dtype=np.float32)[:, None], 4, 1)
        data[f"{split}_urls"] = np.array([f"img{i}" for i in range(num_images)])
    return data


def test_minibatch_pairs_captions_with_their_images():
    data = _indexed_data()
    captions, features, urls = sample_coco_minibatch(data, batch_size=50, split="val",
                                                     rng=np.random.default_rng(1))
    assert captions.shape == (50, 17) and features.shape == (50, 4) and urls.shape == (50,)
    np.testing.assert_array_equal(features[:, 0], captions[:, 0])
    assert urls.tolist() == [f"img{i}" for i in captions[:, 0]]


def test_minibatch_rng_reproducible():
    data = _indexed_data()
    a = sample_coco_minibatch(data, 20, rng=np.random.default_rng(5))
    b = sample_coco_minibatch(data, 20, rng=np.random.default_rng(5))
    c = sample_coco_minibatch(data, 20, rng=np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    np.random.seed(3)
    d = sample_coco_minibatch(data, 20)          # None: numpy's global state, as CS231n
    np.random.seed(3)
    e = sample_coco_minibatch(data, 20)
    np.testing.assert_array_equal(d[1], e[1])


def test_minibatch_on_real_layout(tiny_dir):
    data = load_coco_data(tiny_dir)
    captions, features, urls = sample_coco_minibatch(data, 8, "train", np.random.default_rng(0))
    assert captions.dtype == np.int32 and features.dtype == np.float32
    assert all(u.startswith("synthetic://train2014/") for u in urls)
    with pytest.raises(ValueError, match="split"):
        sample_coco_minibatch(data, 8, "test")


VOCAB = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "cat", "on", "mat"]


def test_decode_one_caption():
    assert decode_captions(np.array([1, 4, 5, 6, 4, 7, 2, 0, 0]), VOCAB) == "<START> a cat on a mat <END>"
    # stops at <END>; <NULL> dropped wherever it is
    assert decode_captions(np.array([1, 4, 0, 5, 2, 6, 7]), VOCAB) == "<START> a cat <END>"
    # sampled captions have no <START> and may never reach <END>
    assert decode_captions(np.array([4, 5, 3]), VOCAB) == "a cat <UNK>"


def test_decode_batch():
    out = decode_captions(np.array([[1, 5, 2, 0], [4, 7, 0, 0]]), VOCAB)
    assert out == ["<START> cat <END>", "a mat"]
    assert decode_captions(np.zeros((0, 5), int), VOCAB) == []
    with pytest.raises(ValueError, match="1-D or 2-D"):
        decode_captions(np.zeros((2, 2, 2), int), VOCAB)


@pytest.mark.parametrize("captions, error, words", [
    (np.array([1, 4, -1]), ValueError, r"token id -1 is outside the vocabulary \[0, 8\)"),
    (np.array([[1, 4], [8, 2]]), ValueError, r"token id 8 is outside the vocabulary \[0, 8\)"),
    (np.array([1.0, 4.0]), TypeError, "integer token ids"),
])
def test_decode_rejects_ids_outside_the_vocabulary(captions, error, words):
    with pytest.raises(error, match=words):
        decode_captions(captions, VOCAB)


def test_decode_with_a_dict_vocabulary():
    idx_to_word = dict(enumerate(VOCAB))
    assert decode_captions(np.array([4, 5, 2, 0]), idx_to_word) == "a cat <END>"
    with pytest.raises(ValueError, match="token id 9 is not a key of idx_to_word"):
        decode_captions(np.array([4, 9]), idx_to_word)


def test_decode_generated_captions(tiny_dir):
    data = load_coco_data(tiny_dir)
    texts = decode_captions(data["train_captions"][:50], data["idx_to_word"])
    for text in texts:
        words = text.split()
        assert words[0] == "<START>" and words[-1] == "<END>" and "<NULL>" not in words
        assert 5 <= len(words) - 2 <= 15


def test_cli_info(tiny_dir, capsys):
    assert data_main(["info", str(tiny_dir)]) == 0
    out = capsys.readouterr().out
    assert "train: 1,500 captions x 17 tokens, 310 images" in out
    assert "vocabulary: 1004 words" in out and "oracle" in out
    assert data_main(["info", str(tiny_dir), "--raw-features"]) == 0
    assert "features 4096-d" in capsys.readouterr().out


def test_cli_info_bad_folder(tmp_path, capsys):
    assert data_main(["info", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
