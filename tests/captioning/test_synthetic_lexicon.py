"""The synthetic generator's word lists: package data in fastrnn/captioning/data/lexicon/."""
import hashlib
import importlib.resources
import os
import pathlib

import h5py
import pytest

from fastrnn.captioning.data import synthetic
from fastrnn.captioning.data.synthetic import LexiconError, load_lexicon

ROOT = pathlib.Path(__file__).resolve().parents[2]


def lexicon_folder():
    return importlib.resources.files("fastrnn.captioning.data") / "lexicon"


def entries(name):
    """The file's entries, read without the loader (blank and '#' lines skipped)."""
    text = (lexicon_folder() / f"{name}.txt").read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def keys(name):
    return [entry.split("|")[0].strip() for entry in entries(name)]


@pytest.fixture
def fresh_lexicon():
    """The lexicon and grammar caches emptied before and after the test."""
    synthetic.lexicon.cache_clear()
    synthetic.grammar.cache_clear()
    yield
    synthetic.lexicon.cache_clear()
    synthetic.grammar.cache_clear()


@pytest.fixture
def lexicon_in(tmp_path, monkeypatch):
    """Point the loader at tmp_path/<name>.txt and return a function writing one there."""
    monkeypatch.setattr(synthetic, "_lexicon_file", lambda name: tmp_path / f"{name}.txt")

    def write(name, data):
        path = tmp_path / f"{name}.txt"
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
        return path
    return write


# --------------------------------------------------------------- the files

def test_the_package_carries_every_lexicon_file():
    names = sorted(p.name for p in lexicon_folder().iterdir() if p.name.endswith(".txt"))
    assert names == sorted(f"{n}.txt" for n in synthetic.LEXICON_FILES)
    for name in synthetic.LEXICON_FILES:
        assert entries(name), name


def test_every_lexicon_file_loads():
    lex = synthetic.lexicon()
    assert len(lex.colours) == 11 and lex.colours[0] == "white"
    assert len(lex.categories) == 80 and lex.categories[0][0] == "man"
    assert all(len(row) == 8 for row in lex.categories)
    assert all(len(row) == 2 for row in lex.places)
    assert all(len(row) == 6 for row in lex.actions)
    assert set(lex.determiners) >= set(synthetic.COUNT_NAMES)
    assert len(lex.clothes) == 5 and all("{c}" in c.split() for c in lex.clothes)
    assert len(lex.tails) == 5 and all("{n}" in t.split() for t in lex.tails)
    assert lex.companions == ["next to", "near", "with", "beside", "next to"]   # weights
    assert len(lex.prefixes) == 6


@pytest.mark.parametrize("name", ["colours", "categories", "places", "actions", "determiners",
                                  "filler_adjectives", "filler_nouns"])
def test_no_repeats_where_the_generator_needs_them_unique(name):
    found = keys(name)
    repeated = sorted({k for k in found if found.count(k) > 1})
    assert repeated == []


def test_word_lists_hold_one_word_per_line():
    for name in ("colours", "filler_adjectives", "filler_nouns"):
        assert all(len(entry.split()) == 1 for entry in entries(name)), name


def test_the_tables_refer_to_each_other():
    lex = synthetic.lexicon()
    places, categories = set(keys("places")), set(keys("categories"))
    for name, _, _, palette, collective, habitat, _, _ in lex.categories:
        assert palette in ("all", "-") or set(palette.split()) <= set(lex.colours), name
        assert collective in ("-", "herd", "flock"), name
        assert set(habitat.split()) <= places, name
    for key, _, subjects, _, kind, args in lex.actions:
        for s in subjects.split():
            assert s[1:] in {"person", "animal", "vehicle", "object"} if s.startswith("@") \
                else s.replace("_", " ") in categories, (key, s)
        known = places if kind == "place" else categories | {"~related"}
        assert {a.replace("_", " ") for a in args.split()} <= known, key


def test_the_generated_data_is_what_the_word_lists_in_code_gave(tmp_path):
    """Golden: the tiny seed-0 dataset written before the lists moved to files."""
    info = synthetic.generate(tmp_path / "d", size="tiny", seed=0, progress=False)
    assert info["vocab_size"] == 1004
    digest = lambda data: hashlib.sha256(data).hexdigest()   # noqa: E731
    assert digest((tmp_path / "d" / "coco2014_vocab.json").read_bytes()) == \
        "e9d0f6b7cfa837c3cbee654c6860a7d891598612ab7ce580ec2521be04bbbf47"
    with h5py.File(tmp_path / "d" / "coco2014_captions.h5") as f:
        assert digest(f["train_captions"][()].astype("<i4").tobytes()) == \
            "580095abb66d3cf2b7946350da4894b60b42348ff9619d3165439c9a645ecb9f"
        assert digest(f["val_captions"][()].astype("<i4").tobytes()) == \
            "6c8c22a1398b323a2d2639ada1bb14423c7ba7e4990f21a6ff039411b5535646"
        assert digest(f["train_image_idxs"][()].astype("<i4").tobytes()) == \
            "b08cbf479ba1a9391b3edb2eb6cb81d3b5214d4fab9e77810886153dc51878d0"


def test_pyproject_and_manifest_ship_the_files():
    tomllib = pytest.importorskip("tomllib")
    pyproject, manifest = ROOT / "pyproject.toml", ROOT / "MANIFEST.in"
    if not pyproject.exists() or not manifest.exists():
        pytest.skip("not run from a checkout or an sdist")
    package_data = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]
    assert "lexicon/*.txt" in package_data["fastrnn.captioning.data"]
    assert "recursive-include fastrnn/captioning/data/lexicon *.txt" in \
        manifest.read_text().splitlines()


# ------------------------------------------------------------- the loader

def test_a_missing_file_is_named():
    with pytest.raises(LexiconError, match=r"lexicon file .*no_such_list\.txt is missing"):
        load_lexicon("no_such_list")


def test_a_missing_file_stops_the_grammar(fresh_lexicon, monkeypatch):
    real = synthetic._lexicon_file
    monkeypatch.setattr(synthetic, "_lexicon_file",
                        lambda name: real("gone_tails" if name == "tails" else name))
    with pytest.raises(LexiconError, match=r"gone_tails\.txt is missing"):
        synthetic.grammar()


def test_comments_blank_lines_and_fields(lexicon_in):
    lexicon_in("t", "# a comment\n\n  alpha | 1  \n# another\nbeta|2\n")
    assert load_lexicon("t", fields=2) == [("alpha", "1"), ("beta", "2")]
    lexicon_in("w", "grüße\nzwei wörter\n")
    assert load_lexicon("w") == ["grüße", "zwei wörter"]


@pytest.mark.parametrize("text, kwargs, match", [
    ("", {}, "is empty"),
    ("# only a comment\n\n", {}, "is empty"),
    ("a | b\n", {}, "line 1: expected one entry without '|'"),
    ("a | b | c\nd | e\n", {"fields": 3}, "line 2: expected 3 non-empty fields"),
    ("a |  | c\n", {"fields": 3}, "line 1: expected 3 non-empty fields"),
    ("red\ngreen\nred\n", {"unique": True}, "line 3: 'red' repeats line 1"),
    ("red\ndark green\n", {"one_word": True}, "line 2: expected one word"),
])
def test_malformed_files_are_named(lexicon_in, text, kwargs, match):
    path = lexicon_in("bad", text)
    with pytest.raises(LexiconError, match=match) as info:
        load_lexicon("bad", **kwargs)
    assert str(path) in str(info.value)


def test_a_file_that_is_not_utf8_is_named(lexicon_in):
    path = lexicon_in("latin1", "gr\xfc\xdfe\n".encode("latin-1"))
    with pytest.raises(LexiconError, match="is not UTF-8") as info:
        load_lexicon("latin1")
    assert str(path) in str(info.value)


def test_phrases_need_their_slot_and_no_slash(lexicon_in):
    lexicon_in("tails", "near a {n}\nbeside a tree\n")
    with pytest.raises(LexiconError, match=r"tails\.txt: 'beside a tree' lacks the word \{n\}"):
        synthetic._phrases("tails", "{n}")
    lexicon_in("prefixes", "a picture of/a photo of\n")
    with pytest.raises(LexiconError, match="one alternative per line"):
        synthetic._phrases("prefixes")


def test_lexicon_error_is_a_value_error():
    assert issubclass(LexiconError, ValueError)
    assert os.path.basename(str(synthetic._lexicon_file("colours"))) == "colours.txt"
