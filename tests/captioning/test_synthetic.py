"""The synthetic COCO generator: layout, determinism, vocabulary, lengths, learnability, CLI."""
import json
import os

import h5py
import numpy as np
import pytest

from fastrnn.captioning.data import decode_captions, load_coco_data, synthetic
from fastrnn.cli.data import main as data_main

FILES = {"coco2014_captions.h5", "coco2014_vocab.json", "train2014_vgg16_fc7_pca.h5",
         "val2014_vgg16_fc7_pca.h5", "train2014_urls.txt", "val2014_urls.txt",
         "synthetic_info.json"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "tiny"
    info = synthetic.generate(folder, size="tiny", seed=0, progress=False)
    return folder, info


@pytest.fixture(scope="module")
def moderate():
    """20,000 captions of 4,000 scenes, straight from the scene model and grammar."""
    rng = np.random.default_rng(11)
    scenes = synthetic.sample_scenes(4000, rng)
    image_idxs = np.repeat(np.arange(4000), 5)
    return scenes, image_idxs, synthetic.render_captions(scenes, image_idxs, rng)


def _contents(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".h5"):
            with h5py.File(path, "r") as f:
                out[name] = {k: f[k][()] for k in f}
        else:
            out[name] = open(path, encoding="utf-8").read()
    return out


def test_layout_and_sizes(tiny):
    folder, info = tiny
    assert set(os.listdir(folder)) == FILES
    with h5py.File(folder / "coco2014_captions.h5", "r") as f:
        assert set(f) == {"train_captions", "train_image_idxs", "val_captions", "val_image_idxs"}
        assert f["train_captions"].shape == (1500, 17) and f["train_captions"].dtype == np.int32
        assert f["val_image_idxs"].dtype == np.int32
    assert info == json.loads((folder / "synthetic_info.json").read_text())
    assert (info["train_images"], info["val_captions"], info["val_images"]) == (310, 735, 152)
    data = load_coco_data(folder)
    for split in ("train", "val"):
        counts = np.bincount(data[f"{split}_image_idxs"], minlength=info[f"{split}_images"])
        assert counts.min() >= 1 and np.bincount(counts).argmax() == 5   # mostly 5, like COCO
        assert data[f"{split}_features"].shape == (info[f"{split}_images"], 512)


def test_split_sizes():
    assert synthetic.split_sizes("full") == {"train_captions": 400_135, "train_images": 82_783,
                                             "val_captions": 195_954, "val_images": 40_504}
    small = synthetic.split_sizes("small")
    assert small["train_captions"] == 20_000 and 4_000 <= small["train_images"] <= 4_200
    # an int keeps COCO's proportions
    s = synthetic.split_sizes(400_135 // 4)
    full = synthetic.split_sizes("full")
    for key in full:
        assert s[key] == pytest.approx(full[key] / 4, rel=1e-3)
    for bad in ("huge", 1, 0, -5, 2.5, True):
        with pytest.raises(ValueError, match="size"):
            synthetic.split_sizes(bad)


def test_deterministic_from_seed(tiny, tmp_path):
    folder, _ = tiny
    synthetic.generate(tmp_path / "again", size="tiny", seed=0, progress=False)
    first, again = _contents(folder), _contents(tmp_path / "again")
    assert first.keys() == again.keys()
    for name in first:
        if name.endswith(".h5"):
            for key in first[name]:
                np.testing.assert_array_equal(first[name][key], again[name][key])
        else:
            assert first[name] == again[name], name
    synthetic.generate(tmp_path / "other", size="tiny", seed=1, progress=False)
    other = _contents(tmp_path / "other")
    assert not np.array_equal(other["coco2014_captions.h5"]["train_captions"],
                              first["coco2014_captions.h5"]["train_captions"])
    # the vocabulary is the same for every dataset, so models move between them
    assert other["coco2014_vocab.json"] == first["coco2014_vocab.json"]


def test_vocabulary_layout(tiny):
    folder, _ = tiny
    vocab = json.loads((folder / "coco2014_vocab.json").read_text())
    words = vocab["idx_to_word"]
    assert len(words) == 1004 and len(set(words)) == 1004
    assert words[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert vocab["word_to_idx"] == {w: i for i, w in enumerate(words)}
    assert all(w.isalpha() and w.islower() for w in words[4:])
    assert words[4] == "a"                      # ordered by frequency, like COCO's file


def test_caption_structure(moderate):
    _, _, captions = moderate
    assert captions.shape == (20_000, 17) and captions.dtype == np.int32
    assert (captions[:, 0] == synthetic.START).all()
    is_end = captions == synthetic.END
    assert (is_end.sum(axis=1) == 1).all()
    end_col = is_end.argmax(axis=1)
    cols = np.arange(17)[None, :]
    assert (captions[cols > end_col[:, None]] == synthetic.NULL).all()       # NULL padding after
    assert (captions[(cols > 0) & (cols < end_col[:, None])] > synthetic.UNK - 1).all()
    assert not (captions[(cols > 0) & (cols < end_col[:, None])] == synthetic.NULL).any()


def test_length_distribution_is_coco_like(moderate):
    _, _, captions = moderate
    stats = synthetic.caption_length_stats(captions)
    assert 10.0 <= stats["mean"] <= 11.0
    assert stats["share_8_to_13"] >= 0.75
    assert stats["max"] == 15 and stats["min"] >= 4


def test_rare_words_become_unk(moderate):
    _, _, captions = moderate
    unk_share = (captions == synthetic.UNK).any(axis=1).mean()
    assert 0.005 <= unk_share <= 0.06
    # the filler words pad the vocabulary and are rare: the rarer half of the vocabulary
    # together makes under 2% of the words
    counts = np.bincount(captions.ravel(), minlength=1004)[4:]
    assert np.sort(counts)[:500].sum() < 0.02 * counts.sum()


def test_articles_agree(moderate):
    _, _, captions = moderate
    for text in decode_captions(captions[:3000], synthetic.grammar().idx_to_word):
        words = text.split()
        for article, nxt in zip(words, words[1:]):
            if article in ("a", "an"):
                assert (article == "an") == synthetic._starts_with_vowel_sound(nxt), text


def _subject_words(g):
    """Per category: every word of its singular and plural names."""
    return [{w for alt in c.singular + c.plural for w in alt} for c in g.categories]


def test_every_caption_names_its_subject(moderate):
    scenes, image_idxs, captions = moderate
    g = synthetic.grammar()
    names = _subject_words(g)
    texts = decode_captions(captions[:4000], g.idx_to_word)
    for text, image in zip(texts, image_idxs[:4000]):
        assert names[scenes["subject"][image]] & set(text.split()), text


def test_captions_of_one_image_vary(moderate):
    _, image_idxs, captions = moderate
    per_image = captions.reshape(4000, 5, 17)
    distinct = np.array([len({c.tobytes() for c in caps}) for caps in per_image])
    assert distinct.mean() > 4.0         # synonyms and word order: repeats are rare


def test_scene_model_tables_are_distributions():
    g = synthetic.grammar()
    np.testing.assert_allclose(g.action_given_subject.sum(axis=1), 1.0)  # every subject can act
    assert len(g.categories) == 80
    rng = np.random.default_rng(0)
    scenes = synthetic.sample_scenes(5000, rng)
    assert len(np.unique(scenes["subject"])) >= 75
    object_action = g.is_object_action[scenes["action"]]
    assert (scenes["object"][object_action] >= 0).all()       # an object action has its object
    assert (scenes["place"][~object_action] >= 0).all()       # a place action has its place


def _nearest_centroid_accuracy(train_x, train_y, test_x, test_y, num_classes):
    centroids = np.zeros((num_classes, train_x.shape[1]))
    np.add.at(centroids, train_y, train_x)
    counts = np.bincount(train_y, minlength=num_classes)
    centroids /= np.maximum(counts, 1)[:, None]
    dist = (test_x ** 2).sum(1)[:, None] - 2 * test_x @ centroids.T + (centroids ** 2).sum(1)
    dist[:, counts == 0] = np.inf
    return (dist.argmin(axis=1) == test_y).mean()


def test_features_carry_the_scene():
    """A nearest-centroid probe reads the subject and action from the features far above
    chance; the same probe on shuffled labels stays near chance (the features say nothing else)."""
    rng = np.random.default_rng(2)
    scenes = synthetic.sample_scenes(4000, rng)
    features = synthetic.scene_features(scenes, rng).astype(np.float64)
    train, test = slice(0, 3000), slice(3000, 4000)
    for factor, classes in (("subject", 80), ("action", len(synthetic.grammar().actions))):
        y = scenes[factor]
        chance = np.bincount(y[test]).max() / 1000
        acc = _nearest_centroid_accuracy(features[train], y[train], features[test], y[test], classes)
        assert acc > 0.8 and acc > 3 * chance, (factor, acc, chance)
        shuffled = rng.permutation(y[train])
        acc0 = _nearest_centroid_accuracy(features[train], shuffled, features[test], y[test], classes)
        assert acc0 < chance + 0.1, (factor, acc0, chance)


def test_features_are_the_only_link_to_captions():
    """Captions depend on the image only through its scene: same scene, same caption law.
    Re-rendering one scene many times gives the same subject every time."""
    g = synthetic.grammar()
    rng = np.random.default_rng(4)
    scene = synthetic.sample_scenes(1, rng)
    captions = synthetic.render_captions(scene, np.zeros(200, int), rng)
    names = _subject_words(g)[scene["subject"][0]]
    assert all(names & set(t.split()) for t in decode_captions(captions, g.idx_to_word))


def test_raw_features_and_oracle(tmp_path):
    info = synthetic.generate(tmp_path / "raw", size=300, seed=3, raw_features=True,
                              progress=False)
    assert info["raw_features"] is True
    data = load_coco_data(tmp_path / "raw", pca_features=False)
    pca = load_coco_data(tmp_path / "raw")
    assert data["train_features"].shape == (info["train_images"], 4096)
    np.testing.assert_allclose(data["train_features"],
                               np.concatenate([b for _, b in synthetic.raw_features(pca["train_features"])]))
    oracle = info["oracle"]
    assert 0.3 < oracle["unigram_bleu"] < 0.9
    b = oracle["corpus_bleu"]
    assert 1 >= b["bleu1"] >= b["bleu2"] >= b["bleu3"] >= b["bleu4"] > 0


def test_oracle_by_hand():
    idx_to_word = ["<NULL>", "<START>", "<END>", "<UNK>", "a", "b", "c"]
    # image 0: two identical captions -> the held-out caption scores 1; image 1: one caption (skipped)
    captions = np.array([[1, 4, 5, 2], [1, 4, 5, 2], [1, 6, 2, 0]], np.int32)
    out = synthetic.oracle_scores(captions, np.array([0, 0, 1]), idx_to_word, num_samples=20)
    assert out["unigram_bleu"] == 1.0 and out["corpus_bleu"]["bleu1"] == 1.0


def test_existing_folder_is_kept(tiny, tmp_path):
    target = tmp_path / "taken"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.generate(target, size=40, progress=False)
    assert os.listdir(target) == ["mine.txt"]
    synthetic.generate(target, size=40, progress=False, overwrite=True)
    assert set(os.listdir(target)) == FILES
    empty = tmp_path / "empty"
    empty.mkdir()
    synthetic.generate(empty, size=40, progress=False)        # an empty folder is fine
    assert set(os.listdir(empty)) == FILES
    assert sorted(os.listdir(tmp_path)) == ["empty", "taken"]  # no temporary folders left


def test_folder_appearing_meanwhile_is_not_replaced(tmp_path, monkeypatch):
    target = tmp_path / "raced"
    real_write = synthetic._write_dataset

    def other_process_wins(folder, *args):
        info = real_write(folder, *args)
        target.mkdir()
        (target / "theirs").write_text("x")
        return info

    monkeypatch.setattr(synthetic, "_write_dataset", other_process_wins)
    with pytest.raises(FileExistsError, match="appeared"):
        synthetic.generate(target, size=40, progress=False)
    assert os.listdir(target) == ["theirs"] and os.listdir(tmp_path) == ["raced"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def fail_on_second(path, **datasets):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(path, **datasets)

    real_write = synthetic._write_h5
    monkeypatch.setattr(synthetic, "_write_h5", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path / "half", size=40, progress=False)
    assert os.listdir(tmp_path) == []


def test_ensure_dataset_caches(tmp_path, monkeypatch):
    path = synthetic.ensure_dataset("tiny", seed=2, cache_dir=tmp_path)
    assert os.path.dirname(path) == str(tmp_path) and set(os.listdir(path)) == FILES
    stamp = os.stat(os.path.join(path, "coco2014_captions.h5")).st_mtime_ns
    assert synthetic.ensure_dataset("tiny", seed=2, cache_dir=tmp_path) == path
    assert os.stat(os.path.join(path, "coco2014_captions.h5")).st_mtime_ns == stamp
    # a folder without synthetic_info.json was not written by the generator: replaced
    foreign = tmp_path / os.path.basename(path).replace("seed2", "seed3")
    foreign.mkdir()
    (foreign / "junk").write_text("x")
    assert synthetic.ensure_dataset("tiny", seed=3, cache_dir=tmp_path) == str(foreign)
    assert set(os.listdir(foreign)) == FILES
    monkeypatch.setenv("FASTRNN_CACHE", str(tmp_path / "env"))
    env_path = synthetic.ensure_dataset("tiny", seed=2)
    assert env_path.startswith(str(tmp_path / "env"))
    monkeypatch.delenv("FASTRNN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert synthetic.cache_dir_default() == str(tmp_path / "xdg" / "fastrnn")


def test_cli_synth(tmp_path, capsys):
    assert data_main(["synth", "--out", str(tmp_path / "d"), "--size", "tiny", "--seed", "5",
                      "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1,500 captions of 310 images" in out and "oracle" in out
    info = json.loads((tmp_path / "d" / "synthetic_info.json").read_text())
    assert info["seed"] == 5 and info["size"] == "tiny" and not info["raw_features"]
    # refuses to overwrite without --overwrite
    assert data_main(["synth", "--out", str(tmp_path / "d"), "--size", "50", "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert data_main(["synth", "--out", str(tmp_path / "d"), "--size", "50", "--no-progress",
                      "--overwrite", "--raw-features"]) == 0
    info = json.loads((tmp_path / "d" / "synthetic_info.json").read_text())
    assert info["train_captions"] == 50 and info["raw_features"]
    assert os.path.isfile(tmp_path / "d" / "train2014_vgg16_fc7.h5")


def test_cli_rejects_bad_size(tmp_path, capsys):
    with pytest.raises(SystemExit):
        data_main(["synth", "--out", str(tmp_path / "d"), "--size", "big"])
    assert "--size" in capsys.readouterr().err
