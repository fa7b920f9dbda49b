"""Synthetic COCO captioning data: the CS231n files, written from a scene model and a grammar.

The real COCO captioning folder cannot be downloaded everywhere, so this module writes a
folder with exactly its layout (see ``fastrnn.captioning.data.coco``) at any size up to the full one.
Its captions carry structure that a model can only learn from the image features.

Scene model (one scene per image)
---------------------------------
- subject: one of 80 object categories (COCO's 80 with "person" split into man / woman /
  boy / girl and hair drier, toaster, parking meter dropped), drawn with COCO-like weights
  (people most often, then animals, vehicles, food and household objects);
- count: one, two, three or many (people and animals are plural more often);
- colour: none or one of 11 colours from the subject's palette (people: their clothes);
- action: one of the actions allowed for the subject (riding, holding, eating, grazing,
  parked, sitting on a surface, next to something, ...);
- second object or place: the action's argument, either an object category ("riding a
  horse") or a place ("walking on the beach");
- place / companion: an object action may also have a place, drawn from the second
  object's habitat ("riding a horse *on the beach*"); a place action may also have a
  companion object at home in that place ("standing in a kitchen *next to a fridge*").

Features: every value of every factor has a fixed random 512-d embedding; an image's
feature vector is the sum of its factors' embeddings, plus a rank-16 nuisance term (image
content no caption mentions) plus isotropic noise. The embeddings come from a fixed seed,
so every dataset (any size, any seed) shares one "world" and a model trained on one can be
evaluated on another. Raw 4096-d "fc7" features are relu(a fixed projection of the PCA
features + bias), so they carry the same information.

Grammar (each of an image's ~5 captions is drawn independently from its scene)
-----------------------------------------------------------------------------
    caption = [prefix] subject [clothes] [early place] [aux] verb argument [companion]
              [late place] [tail]
    subject = count-determiner [adjective] [colour] noun      "a young man", "two brown dogs"
    prefix  = "a picture of" | "a close up of" | ...          (or "there is"/"there are")
    clothes = "in a red shirt" | "wearing a red jacket" ...   (people with a colour)
    aux     = "is" | "are"                                    (agrees with the count)
    argument = "a"/"the" [adjective] noun  |  place phrase    ("a horse" | "on the beach")
    companion = "next to" | "near" | "with" ... + "a"/"the" [adjective] noun
    tail    = "near a lighthouse" | "with a fountain in the background" | ...

Each noun, verb, place and determiner has synonyms ("man"/"guy"/"person", "couch"/"sofa",
"in a field"/"in the grass"); word order varies through the prefix, the early/late place
and the optional aux; colour, place and adjectives are sometimes left out. Adjectives and
tail nouns are the vocabulary's filler words, drawn from a Zipf distribution: the frequent
ones ("large", "small", "tree") often, the rest rarely, and ranks past the vocabulary become
``<UNK>`` (about 4% of captions hold one), as COCO's rare words do. Articles are fixed
afterwards ("a orange cat" -> "an orange cat"). Lengths are shaped like COCO's by redrawing
(LENGTH_ACCEPT): a caption over 15 words always, a short (< 8) or long (14-15) one sometimes.

Word lists: the categories, places, actions, determiners, colours, phrases and filler
words are package data, one entry per line in ``lexicon/<name>.txt`` next to this module
(``load_lexicon``; a missing, empty or malformed file is a ``LexiconError`` naming it).

Vocabulary: exactly 1,004 entries, ``<NULL>``=0, ``<START>``=1, ``<END>``=2, ``<UNK>``=3, then
the grammar's words and the filler words ordered by frequency (measured once on a fixed
reference sample, so it is the same for every dataset), as CS231n's file is.

The oracle score in ``synthetic_info.json``: on the val split, one caption of an image held
out as the "model's" caption and scored against the others (the reference metric with
one reference, and corpus BLEU-1..4 against all the others) — a ceiling to read a trained
model's score against.
"""
import functools
import importlib.resources
import json
import os
import shutil
from dataclasses import dataclass

import h5py
import numpy as np
from tqdm.auto import tqdm

from fastrnn import _io, config
from fastrnn.captioning.data import coco

GENERATOR_VERSION = 1          # bump on any change to the output: cached datasets are keyed by it
WORLD_SEED = 20140101          # fixed embeddings and vocabulary order: one world for all datasets
VOCAB_SIZE = 1004
SPECIALS = ("<NULL>", "<START>", "<END>", "<UNK>")
NULL, START, END, UNK = range(4)
MAX_WORDS = 15                 # + <START> and <END> = 17 columns, as COCO's
COUNT_NAMES = ("one", "two", "three", "many")   # count 0..3 (the keys of determiners.txt)
FEATURE_DIM, RAW_FEATURE_DIM = 512, 4096

# probability of keeping a drawn caption of each length 0..16 (16 = too long): COCO's
# captions are mostly 8 to 13 words
LENGTH_ACCEPT = np.array([0, 0, 0, 0, 0.1, 0.15, 0.25, 0.45, 1, 1, 1, 1, 1, 1, 0.6, 0.4, 0])

FULL_SIZE = {"train_captions": 400_135, "train_images": 82_783,
             "val_captions": 195_954, "val_images": 40_504}
NAMED_SIZES = {"tiny": 1_500, "small": 20_000, "full": FULL_SIZE["train_captions"]}

# ---------------------------------------------------------------------------------------
# Lexicon: the word lists, package data in lexicon/<name>.txt (see load_lexicon).
# Alternatives are separated by "/", a repeated alternative is drawn more often.
# ---------------------------------------------------------------------------------------
LEXICON_PACKAGE, LEXICON_FOLDER = "fastrnn.captioning.data", "lexicon"


class LexiconError(ValueError):
    """A word list of the generator (``lexicon/<name>.txt`` of this package) is missing,
    unreadable, empty or malformed; the message names the file."""


def _lexicon_file(name):
    return importlib.resources.files(LEXICON_PACKAGE) / LEXICON_FOLDER / f"{name}.txt"


def load_lexicon(name, fields=1, unique=False, one_word=False):
    """The entries of the word list ``lexicon/<name>.txt``, in file order.

    The file is UTF-8 text, one entry per line; blank lines and lines starting with ``#``
    are skipped and each line is stripped. ``fields=1``: each entry is a string (without
    ``|``); ``fields > 1``: a tuple of that many non-empty stripped strings, the line's
    fields separated by ``|``. ``unique``: no entry (no first field) may repeat.
    ``one_word``: each entry is a single word (no spaces).

    Raises LexiconError naming the file if it is missing, unreadable, not UTF-8, holds no
    entry or a line that does not have that form.
    """
    resource = _lexicon_file(name)
    where = f"lexicon file {resource}"
    try:
        text = resource.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LexiconError(f"{where} is missing (the package data of fastrnn is incomplete: "
                           f"reinstall fastrnn)") from None
    except UnicodeDecodeError as err:
        raise LexiconError(f"{where} is not UTF-8 text (byte {err.start}: {err.reason})") \
            from None
    except OSError as err:
        raise LexiconError(f"{where} cannot be read ({err.strerror or err})") from None
    entries, first_line = [], {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != fields or not all(parts):
            expected = ("one entry without '|'" if fields == 1
                        else f"{fields} non-empty fields separated by '|'")
            raise LexiconError(f"{where}, line {number}: expected {expected}, got {line!r}")
        if one_word and len(line.split()) != 1:
            raise LexiconError(f"{where}, line {number}: expected one word, got {line!r}")
        if unique and parts[0] in first_line:
            raise LexiconError(f"{where}, line {number}: {parts[0]!r} repeats line "
                               f"{first_line[parts[0]]}")
        first_line.setdefault(parts[0], number)
        entries.append(parts[0] if fields == 1 else tuple(parts))
    if not entries:
        raise LexiconError(f"{where} is empty (no entries, only blank or '#' lines)")
    return entries


def _phrases(name, slot=None):
    """One-line alternatives of lexicon ``name`` (no '/' in them), each holding the
    placeholder ``slot`` ('{c}', '{n}') as a word when given."""
    entries = load_lexicon(name)
    for entry in entries:
        if "/" in entry:
            raise LexiconError(f"lexicon file {_lexicon_file(name)}: {entry!r}: one alternative "
                               f"per line, without '/'")
        if slot is not None and slot not in entry.split():
            raise LexiconError(f"lexicon file {_lexicon_file(name)}: {entry!r} lacks the "
                               f"word {slot}")
    return entries


@dataclass(frozen=True)
class Lexicon:
    """The generator's word lists, as read from ``lexicon/*.txt``."""
    colours: list        # colours.txt: one colour per line; a colour's id is its position
    categories: list     # categories.txt: (name, class, weight, palette, collective,
    #                      habitat, singular, plural)
    places: list         # places.txt: (key, realisations)
    actions: list        # actions.txt: (key, weight, subjects, verbs, kind, arguments)
    determiners: dict    # determiners.txt: count [collective] -> alternatives
    clothes: list        # clothes.txt: one alternative per line, {c} = the colour
    prefixes: list       # prefixes.txt
    companions: list     # companions.txt
    tails: list          # tails.txt: {n} = a filler noun
    filler_adjectives: list   # most frequent first
    filler_nouns: list


LEXICON_FILES = ("colours", "categories", "places", "actions", "determiners", "clothes",
                 "prefixes", "companions", "tails", "filler_adjectives", "filler_nouns")


@functools.lru_cache(maxsize=1)
def lexicon():
    """The word lists (read once per process)."""
    return Lexicon(
        colours=load_lexicon("colours", unique=True, one_word=True),
        categories=load_lexicon("categories", fields=8, unique=True),
        places=load_lexicon("places", fields=2, unique=True),
        actions=load_lexicon("actions", fields=6, unique=True),
        determiners=dict(load_lexicon("determiners", fields=2, unique=True)),
        clothes=_phrases("clothes", "{c}"),
        prefixes=_phrases("prefixes"),
        companions=_phrases("companions"),
        tails=_phrases("tails", "{n}"),
        filler_adjectives=load_lexicon("filler_adjectives", unique=True, one_word=True),
        filler_nouns=load_lexicon("filler_nouns", unique=True, one_word=True))


# ---------------------------------------------------------------------------------------
# Grammar: the lexicon compiled into arrays for vectorised drawing.
# ---------------------------------------------------------------------------------------
def _alternatives(text):
    return [alt.split() for alt in text.split("/")]


class Words:
    """Definition-order word ids: specials first, then each word as the grammar first uses it."""

    def __init__(self):
        self.words, self.index = list(SPECIALS), {w: i for i, w in enumerate(SPECIALS)}

    def ids(self, tokens):
        for token in tokens:
            if token not in self.index:
                self.index[token] = len(self.words)
                self.words.append(token)
        return [self.index[t] for t in tokens]


class PhraseTable:
    """Weighted alternative token sequences for each integer key.

    alternatives[key] is a list of (word ids, weight); a key with no alternatives draws
    the empty phrase. ``draw`` picks one alternative per row, vectorised over rows.
    """

    def __init__(self, alternatives):
        num_keys = len(alternatives)
        num_alts = max(1, max(len(alts) for alts in alternatives))
        width = max([1] + [len(ids) for alts in alternatives for ids, _ in alts])
        self.tokens = np.zeros((num_keys, num_alts, width), np.int32)   # (K, A, W)
        self.lengths = np.zeros((num_keys, num_alts), np.int64)         # (K, A)
        self.cum = np.ones((num_keys, num_alts))                        # (K, A) cumulative probs
        for k, alts in enumerate(alternatives):
            if not alts:
                continue
            weights = np.array([w for _, w in alts], float)
            self.cum[k, :len(alts)] = np.cumsum(weights / weights.sum())
            self.cum[k, len(alts) - 1] = 1.0
            for a, (ids, _) in enumerate(alts):
                self.tokens[k, a, :len(ids)] = ids
                self.lengths[k, a] = len(ids)

    def draw(self, keys, rng):
        """keys (N,) -> tokens (N, W), lengths (N,)."""
        u = rng.random(len(keys))
        if len(self.cum) == 1:     # one key, maybe thousands of alternatives: binary search
            alt = np.searchsorted(self.cum[0], u, side="right")
        else:
            alt = (u[:, None] >= self.cum[keys]).sum(axis=1)
        return self.tokens[keys, alt], self.lengths[keys, alt]


def _uniform(alternative_lists):
    return [[(ids, 1.0) for ids in alts] for alts in alternative_lists]


def _zipf(word_ids, num_unknown):
    """[(word id, Zipf weight of its rank)], then num_unknown more ranks that are <UNK>."""
    ids = list(word_ids) + [UNK] * num_unknown
    return [(i, 1.0 / (rank + 2.0)) for rank, i in enumerate(ids)]


@dataclass
class Category:
    name: str
    kind: str
    weight: float
    palette: list
    collective: str
    habitat: list
    singular: list
    plural: list


def _palette(text, colours):
    return colours if text == "all" else [] if text == "-" else text.split()


def _parse_categories(lex):
    cats = []
    for name, kind, weight, palette, collective, habitat, singular, plural in lex.categories:
        cats.append(Category(name, kind, float(weight),
                             _palette(palette, lex.colours),
                             "" if collective == "-" else collective, habitat.split(),
                             _alternatives(singular), _alternatives(plural)))
    return cats


class Grammar:
    """The compiled scene model and grammar; build once with ``grammar()``."""

    def __init__(self):
        words = Words()
        lex = self.lexicon = lexicon()
        self.colours = lex.colours
        self.categories = _parse_categories(lex)
        self.category_index = {c.name: i for i, c in enumerate(self.categories)}
        place_lines = lex.places
        self.place_names = [key for key, _ in place_lines]
        place_index = {p: i for i, p in enumerate(self.place_names)}
        self._parse_actions()
        self._build_scene_tables(place_index)

        cats = self.categories
        self.article = words.ids(["a"])[0]
        self.an = words.ids(["an"])[0]
        self.subject_nouns = PhraseTable(_uniform(            # key: subject * 2 + plural
            [[words.ids(a) for a in names] for c in cats for names in (c.singular, c.plural)]))
        self.determiners = PhraseTable(_uniform(
            [[words.ids(a) for a in _alternatives(self._determiner_text(count, coll))]
             for count in range(4) for coll in ("", "herd", "flock")]))
        self.colour_words = PhraseTable([[]] + [[(words.ids([c]), 1.0)] for c in self.colours])
        self.clothes = PhraseTable([[]] + _uniform(
            [[words.ids(a.format(c=c).split()) for a in lex.clothes] for c in self.colours]))
        self.aux = PhraseTable([[(words.ids(["is"]), 1.0)], [(words.ids(["are"]), 1.0)]])
        self.prefixes = PhraseTable(_uniform([[words.ids(a.split()) for a in lex.prefixes]]))
        self.there = PhraseTable([[(words.ids(["there", "is"]), 1.0)],
                                  [(words.ids(["there", "are"]), 1.0)]])
        self.verbs = PhraseTable(_uniform(
            [[words.ids([] if v == ["-"] else v) for v in a["verbs"]] for a in self.actions]))
        self.object_determiners = PhraseTable([[(words.ids(["a"]), 4.0),
                                                (words.ids(["the"]), 1.0)]])
        self.object_nouns = PhraseTable(_uniform([[words.ids(a) for a in c.singular]
                                                  for c in cats]))
        self.places = PhraseTable(_uniform(
            [[words.ids(a) for a in _alternatives(text)] for _, text in place_lines]))
        self.companion_preps = PhraseTable(_uniform([[words.ids(a.split())
                                                      for a in lex.companions]]))
        self._add_fillers(words)
        self.definition_words = words.words
        self.vowel_sound = np.array([_starts_with_vowel_sound(w) for w in words.words])
        self._order_vocabulary()

    # -- parsing ------------------------------------------------------------------------
    def _determiner_text(self, count, collective):
        name, determiners = COUNT_NAMES[count], self.lexicon.determiners
        return determiners.get(f"{name} {collective}".strip(), determiners[name])

    def _parse_actions(self):
        self.actions = []
        for key, weight, subjects, verbs, kind, args in self.lexicon.actions:
            self.actions.append({"key": key, "weight": float(weight), "subjects": subjects.split(),
                                 "verbs": _alternatives(verbs), "kind": kind, "args": args.split()})

    def _subjects_of(self, action):
        out = set()
        for s in action["subjects"]:
            if s.startswith("@"):
                out |= {i for i, c in enumerate(self.categories) if c.kind == s[1:]}
            else:
                out.add(self.category_index[s.replace("_", " ")])
        return out

    def _build_scene_tables(self, place_index):
        """Probability tables of the scene model: action|subject, argument|action, place|..."""
        cats, acts = self.categories, self.actions
        C, A, P = len(cats), len(acts), len(self.place_names)
        self.subject_prior = np.array([c.weight for c in cats]) / sum(c.weight for c in cats)
        self.is_object_action = np.array([a["kind"] == "obj" for a in acts])
        habitat = np.zeros((C, P))                                    # (C, P) 0/1
        for i, c in enumerate(cats):
            habitat[i, [place_index[p] for p in c.habitat]] = 1
        self.habitat = habitat
        action_given_subject = np.zeros((C, A))
        # argument | (action, subject): an object category (C values) or a place (P values)
        self.object_given = np.zeros((A, C, C))
        self.place_given = np.zeros((A, C, P))
        for a, act in enumerate(acts):
            for s in self._subjects_of(act):
                if act["kind"] == "obj":
                    if act["args"] == ["~related"]:
                        objs = [o for o, c in enumerate(cats) if c.kind == "object" and o != s
                                and habitat[o] @ habitat[s] > 0]
                    else:
                        objs = [self.category_index[o.replace("_", " ")] for o in act["args"]]
                    objs = [o for o in objs if o != s]
                    if not objs:
                        continue
                    self.object_given[a, s, objs] = 1
                else:
                    listed = np.isin(np.arange(P), [place_index[p] for p in act["args"]])
                    places = habitat[s] * listed
                    if not places.any():   # the subject's habitat misses them all: any of them
                        places = listed * 1.0
                    self.place_given[a, s] = places
                action_given_subject[s, a] = act["weight"]
        self.action_given_subject = _normalise_rows(action_given_subject)
        self.object_given = _normalise_rows(self.object_given)
        self.place_given = _normalise_rows(self.place_given)
        # optional extra place of an object action: from the argument's habitat
        self.place_of_object = _normalise_rows(habitat)
        # optional companion of a place action: anything at home in that place
        self.companion_given_place = _normalise_rows(habitat.T)
        kinds = [c.kind for c in cats]
        self.count_prior = np.array([{"person": [0.70, 0.12, 0.05, 0.13],
                                      "animal": [0.62, 0.16, 0.07, 0.15],
                                      "vehicle": [0.80, 0.10, 0.04, 0.06],
                                      "object": [0.86, 0.08, 0.03, 0.03]}[k] for k in kinds])
        colour_of = np.zeros((C, len(self.colours) + 1))            # (C, 1 + colours), 0 = none
        for i, c in enumerate(cats):
            if c.palette:
                colour_of[i, 0] = 0.5
                colour_of[i, [1 + self.colours.index(x) for x in c.palette]] = 0.5 / len(c.palette)
            else:
                colour_of[i, 0] = 1.0
        self.colour_given_subject = colour_of
        self.is_person = np.array([k == "person" for k in kinds])
        self.collective = np.array([("", "herd", "flock").index(c.collective) for c in cats])

    def _add_fillers(self, words):
        """Pad the vocabulary to VOCAB_SIZE with the top filler words; the rest are <UNK>."""
        lex = self.lexicon
        adjectives = _unique(lex.filler_adjectives, words.index)
        nouns = _unique(lex.filler_nouns, set(words.index) | set(adjectives))
        frames = [words.ids([t for t in alt if t != "{n}"]) + [alt.index("{n}")]
                  for alt in (tail.split() for tail in lex.tails)]
        needed = VOCAB_SIZE - len(words.words)
        if needed > len(adjectives) + len(nouns) or needed < 0:
            raise RuntimeError(f"filler lists cannot pad {len(words.words)} words to {VOCAB_SIZE}")
        num_adj = min(len(adjectives), needed * len(adjectives) // (len(adjectives) + len(nouns)))
        num_nouns = needed - num_adj
        adj_ids, noun_ids = words.ids(adjectives[:num_adj]), words.ids(nouns[:num_nouns])
        # the unknown tail is as long as the known one: ranks past the vocabulary become <UNK>
        self.adjectives = PhraseTable([[([i], w) for i, w in _zipf(adj_ids, len(adj_ids))]])
        self.tails = PhraseTable([[(f[:f[-1]] + [i] + f[f[-1]:-1], w)   # noun at the "{n}" slot
                                   for f in frames for i, w in _zipf(noun_ids, len(noun_ids))]])

    def _order_vocabulary(self):
        """Vocabulary ids by frequency on a fixed reference sample, as COCO's file is ordered."""
        self.definition_to_vocab = np.arange(len(self.definition_words))
        rng = np.random.default_rng(WORLD_SEED)
        scenes = sample_scenes(4000, rng, self)
        tokens = render_captions(scenes, np.repeat(np.arange(4000), 5), rng, self)
        counts = np.bincount(tokens.ravel(), minlength=len(self.definition_words))
        counts[:len(SPECIALS)] = np.iinfo(np.int64).max       # specials keep ids 0-3
        order = sorted(range(len(counts)), key=lambda i: (-counts[i], i))
        self.definition_to_vocab = np.empty(len(order), np.int32)
        self.definition_to_vocab[order] = np.arange(len(order))
        self.idx_to_word = [self.definition_words[i] for i in order]


def _normalise_rows(table):
    total = table.sum(axis=-1, keepdims=True)
    return np.divide(table, total, out=np.zeros_like(table), where=total > 0)


def _unique(candidates, taken):
    """candidates in order, without repeats and without the words in taken."""
    out, seen = [], set(taken)
    for w in candidates:
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def _starts_with_vowel_sound(word):
    """Whether the article before word is "an"."""
    if word in ("one", "uniform", "unicycle", "unique", "university", "used"):
        return False
    return word[0] in "aeiou" or word in ("hour", "honest")


@functools.lru_cache(maxsize=1)
def grammar():
    """The compiled grammar (built once per process, about 0.2 s)."""
    return Grammar()


# ---------------------------------------------------------------------------------------
# Scenes, features, captions
# ---------------------------------------------------------------------------------------
def _draw_rows(probs, rng):
    """One categorical draw per row of probs (N, K) -> (N,) indices."""
    u = rng.random(len(probs))
    return np.minimum((u[:, None] >= np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


def sample_scenes(num_images, rng, gram=None):
    """Latent scenes of ``num_images`` images: dict of (Ni,) int arrays, -1 = absent.

    Keys: subject, count (0 one, 1 two, 2 three, 3 many), colour (0 none, 1.. the colours),
    action, object (the argument of an object action, or an optional companion of a place
    action), place (the argument of a place action, or an optional place of an object action).
    """
    g = gram or grammar()
    subject = rng.choice(len(g.categories), num_images, p=g.subject_prior)
    count = _draw_rows(g.count_prior[subject], rng)
    colour = _draw_rows(g.colour_given_subject[subject], rng)
    colour[g.is_person[subject] & (count > 0)] = 0      # clothes colour only for one person
    action = _draw_rows(g.action_given_subject[subject], rng)
    object_action = g.is_object_action[action]
    arg_object = _draw_rows(g.object_given[action, subject], rng)
    arg_place = _draw_rows(g.place_given[action, subject], rng)
    extra_place = _draw_rows(g.place_of_object[arg_object], rng)
    extra_place = np.where(rng.random(num_images) < 0.75, extra_place, -1)
    companion = _draw_rows(g.companion_given_place[arg_place], rng)
    companion = np.where((rng.random(num_images) < 0.5) & (companion != subject), companion, -1)
    obj = np.where(object_action, arg_object, companion)
    place = np.where(object_action, extra_place, arg_place)
    return {"subject": subject, "count": count, "colour": colour, "action": action,
            "object": obj, "place": place}


def render_captions(scenes, image_idxs, rng, gram=None):
    """Captions (Nc, 17) int32 in vocabulary ids for the images image_idxs (Nc,) of scenes."""
    g = gram or grammar()
    rows = {k: v[image_idxs] for k, v in scenes.items()}
    words, lengths = _draw_words(rows, rng, g)
    pending = np.arange(len(lengths))          # captions drawn but not yet accepted
    for attempt in range(100):
        # rejection sampling shapes the lengths like COCO's; after 20 rounds, only > 15 is redrawn
        lens = np.minimum(lengths[pending], MAX_WORDS + 1)
        accept = LENGTH_ACCEPT[lens] if attempt < 20 else (lens <= MAX_WORDS).astype(float)
        pending = pending[rng.random(len(pending)) >= accept]
        if not len(pending):
            break
        new, new_len = _draw_words({k: v[pending] for k, v in rows.items()}, rng, g)
        words[pending] = 0
        words[pending, :new.shape[1]], lengths[pending] = new, new_len
    if (lengths > MAX_WORDS).any():
        raise RuntimeError("grammar keeps drawing captions over 15 words")
    captions = np.zeros((len(image_idxs), MAX_WORDS + 2), np.int32)
    captions[:, 0] = START
    captions[:, 1:1 + MAX_WORDS] = words[:, :MAX_WORDS]
    captions[np.arange(len(captions)), 1 + lengths] = END
    return g.definition_to_vocab[captions].astype(np.int32)


def _draw_words(s, rng, g):
    """Definition-id words (N, W) and lengths (N,) for scene rows s; the grammar in one pass."""
    n = len(s["subject"])
    plural = (s["count"] > 0).astype(np.int64)
    has_object = s["object"] >= 0
    object_action = g.is_object_action[s["action"]]
    # word order: plain, place first, "a picture of ...", "there is ..."
    template = rng.choice(4, n, p=[0.6, 0.16, 0.18, 0.06])
    parts = []

    def add(table, keys, keep=True):
        tokens, lengths = table.draw(keys, rng)
        parts.append((tokens, np.where(keep, lengths, 0)))

    add(g.prefixes, np.zeros(n, np.int64), template == 2)
    add(g.there, plural, template == 3)
    add(g.determiners, s["count"] * 3 + g.collective[s["subject"]])
    add(g.adjectives, np.zeros(n, np.int64), rng.random(n) < 0.14)
    person = g.is_person[s["subject"]]
    colour_said = rng.random(n) < 0.85
    add(g.colour_words, s["colour"], ~person & colour_said)
    add(g.subject_nouns, s["subject"] * 2 + plural)
    add(g.clothes, s["colour"], person & colour_said)
    place_said = (s["place"] >= 0) & (rng.random(n) < 0.8)
    place_keys = np.maximum(s["place"], 0)
    add(g.places, place_keys, place_said & object_action & (template == 1))
    add(g.aux, plural, (template <= 1) & (rng.random(n) < 0.35))
    add(g.verbs, s["action"])
    add(g.places, place_keys, ~object_action)                 # a place argument is always said
    object_said = object_action | (has_object & (rng.random(n) < 0.75))
    add(g.companion_preps, np.zeros(n, np.int64), object_said & ~object_action)
    add(g.object_determiners, np.zeros(n, np.int64), object_said)
    add(g.adjectives, np.zeros(n, np.int64), object_said & (rng.random(n) < 0.1))
    add(g.object_nouns, np.maximum(s["object"], 0), object_said)
    add(g.places, place_keys, place_said & object_action & (template != 1))
    add(g.tails, np.zeros(n, np.int64), rng.random(n) < 0.12)
    words, lengths = _concatenate(parts, n)
    _fix_articles(words, g)
    return words, lengths


def _concatenate(parts, n):
    """Left-align the ragged parts [(tokens (N, W_i), lengths (N,))] into (N, sum W_i)."""
    words = np.zeros((n, sum(t.shape[1] for t, _ in parts)), np.int32)
    offset = np.zeros(n, np.int64)
    for tokens, lengths in parts:
        r, c = np.nonzero(np.arange(tokens.shape[1])[None, :] < lengths[:, None])
        words[r, offset[r] + c] = tokens[r, c]
        offset += lengths
    return words, offset


def _fix_articles(words, g):
    """'a' before a vowel sound becomes 'an' (and back), in place."""
    article = np.isin(words[:, :-1], (g.article, g.an))
    vowel_next = g.vowel_sound[words[:, 1:]]
    head = words[:, :-1]
    head[article & vowel_next] = g.an
    head[article & ~vowel_next] = g.article


def world_embeddings(g=None):
    """Fixed random embeddings (values, 512) of each factor, nuisance basis, raw projection."""
    g = g or grammar()
    rng = np.random.default_rng(WORLD_SEED + 1)
    # per-dimension variance of each factor's contribution; with nuisance 0.27 and noise 0.5
    # a feature dimension has variance about 1
    scale = {"subject": 0.06, "action": 0.04, "object": 0.04, "place": 0.03, "colour": 0.03,
             "count": 0.03}
    sizes = {"subject": len(g.categories), "count": 4, "colour": len(g.colours) + 1,
             "action": len(g.actions), "object": len(g.categories) + 1,
             "place": len(g.place_names) + 1}
    emb = {k: (rng.standard_normal((sizes[k], FEATURE_DIM)) * np.sqrt(scale[k])).astype(np.float32)
           for k in scale}
    nuisance = (rng.standard_normal((16, FEATURE_DIM)) * np.sqrt(0.27 / 16)).astype(np.float32)
    raw = rng.standard_normal((FEATURE_DIM, RAW_FEATURE_DIM)) / np.sqrt(FEATURE_DIM)
    raw = raw.astype(np.float32)
    return emb, nuisance, raw


NOISE_STD = np.sqrt(0.5)


def scene_features(scenes, rng, g=None):
    """PCA-style features (Ni, 512) float32: factor embeddings + nuisance + noise."""
    emb, nuisance, _ = world_embeddings(g)
    n = len(scenes["subject"])
    features = rng.standard_normal((n, FEATURE_DIM), dtype=np.float32)
    features *= NOISE_STD
    features += rng.standard_normal((n, nuisance.shape[0]), dtype=np.float32) @ nuisance
    for factor, table in emb.items():
        values = scenes[factor]
        features += table[values + 1 if factor in ("object", "place") else values]   # -1 -> row 0
    return features


def raw_features(features, chunk=8192):
    """'fc7' features (Ni, 4096) from the PCA ones: relu(features @ R - 0.3), chunk by chunk."""
    _, _, projection = world_embeddings()
    for start in range(0, len(features), chunk):
        block = features[start:start + chunk] @ projection
        block -= 0.3
        np.maximum(block, 0, out=block)
        yield start, block


def captions_per_image(num_images, num_captions, rng):
    """(Ni,) caption counts summing to num_captions, mostly 5 like COCO, each >= 1."""
    if num_captions < num_images:
        raise ValueError(f"{num_captions} captions cannot cover {num_images} images")
    base, extra = divmod(num_captions, num_images)
    counts = np.full(num_images, base, np.int64)
    counts[rng.choice(num_images, extra, replace=False)] += 1
    # jitter: move one caption between random image pairs, keeping every image at >= 1
    donors = rng.choice(num_images, num_images // 20, replace=False)
    donors = donors[counts[donors] > 1]
    takers = rng.choice(num_images, len(donors), replace=False)
    np.subtract.at(counts, donors, 1)
    np.add.at(counts, takers, 1)
    return counts


# ---------------------------------------------------------------------------------------
# Datasets on disk
# ---------------------------------------------------------------------------------------
def split_sizes(size):
    """{'train_captions', 'train_images', 'val_captions', 'val_images'} for a size name or int."""
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if size == "full":
        return dict(FULL_SIZE)
    if isinstance(size, str):
        if size not in NAMED_SIZES:
            raise ValueError(f"size must be one of {sorted(NAMED_SIZES)} or a number of train "
                             f"captions, got {size!r}")
        size = NAMED_SIZES[size]
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 2 <= size <= 10**8:
        raise ValueError(f"size must be one of {sorted(NAMED_SIZES)} or a number of train "
                         f"captions in [2, 1e8], got {size!r}")
    f = FULL_SIZE
    train_images = max(1, round(size * f["train_images"] / f["train_captions"]))
    val_captions = max(1, round(size * f["val_captions"] / f["train_captions"]))
    val_images = max(1, round(val_captions * f["val_images"] / f["val_captions"]))
    return {"train_captions": int(size), "train_images": train_images,
            "val_captions": val_captions, "val_images": val_images}


def generate(out_dir, size="small", seed=0, raw_features=False, progress=True, overwrite=False):
    """Write a synthetic COCO captioning folder to out_dir and return its info dict.

    size: "tiny" (1,500 train captions), "small" (20,000), "full" (COCO's 400,135 / 195,954
    captions of 82,783 / 40,504 images) or a number of train captions (val scaled alike).
    raw_features: also write the 4096-d fc7 files (2 GB at full size: 1.4 train, 0.7 val).
    The folder appears complete or not at all (written to a temporary folder, then renamed).
    overwrite: replace an existing non-empty out_dir (otherwise FileExistsError).
    """
    sizes = split_sizes(size)
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)) \
            and not overwrite:
        raise FileExistsError(f"{out_dir} already exists and is not empty; choose another "
                              f"folder or pass overwrite=True (--overwrite)")
    # '.tmp-<name>-<pid>@<host>-<random>' next to out_dir, as fastrnn._io names every
    # temporary file: one left by a killed generator is removed by the next one
    tmp = _io.make_temp_dir(out_dir)
    try:
        info = _write_dataset(tmp, sizes, size, seed, raw_features, progress)
        _io.fsync_tree(tmp)
        _move_into_place(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _move_into_place(tmp, out_dir, overwrite):
    """Rename the finished folder tmp to out_dir in one step (replacing it if overwrite)."""
    parent = os.path.dirname(out_dir)
    if overwrite and os.path.exists(out_dir):
        trash = _io.make_temp_dir(out_dir)   # the old folder, until the new one is in place
        os.rename(out_dir, os.path.join(trash, "old"))
        os.rename(tmp, out_dir)
        _io.fsync_folder(parent)
        shutil.rmtree(trash, ignore_errors=True)
        return
    try:
        os.rename(tmp, out_dir)       # replaces an empty folder, fails on a non-empty one
    except OSError as err:
        if os.path.exists(out_dir):   # someone else wrote it meanwhile
            raise FileExistsError(f"{out_dir} appeared while it was being generated") from err
        raise
    _io.fsync_folder(parent)


def _write_dataset(folder, sizes, size, seed, with_raw, progress):
    g = grammar()
    steps = ["train", "val", "oracle"]
    bar = tqdm(total=len(steps) + (2 if with_raw else 0), desc="synthetic COCO", unit="step",
               disable=not progress)
    rngs = dict(zip(("train", "val"), np.random.default_rng(seed).spawn(2)))
    captions = {}
    for split in ("train", "val"):
        rng = rngs[split]
        num_images, num_captions = sizes[f"{split}_images"], sizes[f"{split}_captions"]
        scenes = sample_scenes(num_images, rng, g)
        counts = captions_per_image(num_images, num_captions, rng)
        image_idxs = rng.permutation(np.repeat(np.arange(num_images, dtype=np.int32), counts))
        caps = render_captions(scenes, image_idxs, rng, g)
        features = scene_features(scenes, rng, g)
        captions[split] = caps, image_idxs
        _write_h5(os.path.join(folder, coco.features_file(split)), features=features)
        if with_raw:
            _write_raw_features(os.path.join(folder, coco.features_file(split, False)), features)
            bar.update()
        with open(os.path.join(folder, coco.urls_file(split)), "w", encoding="utf-8") as f:
            f.write("".join(f"synthetic://{split}2014/COCO_{split}2014_{i:012d}.jpg\n"
                            for i in range(num_images)))
        bar.update()
    _write_h5(os.path.join(folder, coco.CAPTIONS_FILE),
              **{f"{s}_{k}": v for s, (c, i) in captions.items()
                 for k, v in (("captions", c), ("image_idxs", i))})
    with open(os.path.join(folder, coco.VOCAB_FILE), "w", encoding="utf-8") as f:
        json.dump({"idx_to_word": g.idx_to_word,
                   "word_to_idx": {w: i for i, w in enumerate(g.idx_to_word)}}, f)
    oracle = oracle_scores(*captions["val"], g.idx_to_word, seed=seed)
    bar.update()
    bar.close()
    info = {"generator": "fastrnn.captioning.data.synthetic", "version": GENERATOR_VERSION,
            "size": size if isinstance(size, str) else int(size), "seed": int(seed), **sizes,
            "vocab_size": len(g.idx_to_word), "feature_dim": FEATURE_DIM,
            "raw_features": bool(with_raw),
            "caption_words": caption_length_stats(captions["train"][0]), "oracle": oracle}
    with open(os.path.join(folder, "synthetic_info.json"), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return info


def _write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, array in datasets.items():
            f.create_dataset(name, data=array)


def _write_raw_features(path, features):
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("features", (len(features), RAW_FEATURE_DIM), np.float32)
        for start, block in raw_features(features):
            ds[start:start + len(block)] = block


def caption_length_stats(captions):
    """Words per caption (no <START>/<END>/<NULL>): mean, min, max and the 8-13 share."""
    words = ((captions != NULL) & (captions != START) & (captions != END)).sum(axis=1)
    return {"mean": round(float(words.mean()), 3), "min": int(words.min()),
            "max": int(words.max()),
            "share_8_to_13": round(float(((words >= 8) & (words <= 13)).mean()), 3)}


def oracle_scores(captions, image_idxs, idx_to_word, seed=0, num_samples=1000):
    """BLEU of one held-out caption of an image against the others (a score ceiling).

    unigram_bleu: the reference metric (mean unigram BLEU), over num_samples random captions with another
    caption of the same image as the candidate; corpus_bleu: for num_samples images, one
    caption against all the others. Images with a single caption are skipped.
    """
    from fastrnn.captioning import metrics

    rng = np.random.default_rng([seed, 7])
    order = np.argsort(image_idxs, kind="stable")
    counts = np.bincount(image_idxs)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    eligible = np.flatnonzero(counts >= 2)
    if not len(eligible):
        return {"unigram_bleu": None, "corpus_bleu": None, "split": "val"}
    # reference: a random caption; candidate: another caption of its image
    ref_rows = rng.choice(np.flatnonzero(counts[image_idxs] >= 2), num_samples)
    img = image_idxs[ref_rows]
    group_pos = np.empty(len(order), np.int64)
    group_pos[order] = np.arange(len(order)) - np.repeat(starts, counts)
    other = rng.integers(0, counts[img] - 1)
    other += other >= group_pos[ref_rows]
    cand_rows = order[starts[img] + other]
    decode = coco.decode_captions
    unigram = metrics.mean_unigram_bleu(decode(captions[ref_rows], idx_to_word),
                                        decode(captions[cand_rows], idx_to_word))
    images = rng.choice(eligible, min(num_samples, len(eligible)), replace=False)
    held_out = rng.integers(0, counts[images])
    references, candidates = [], []
    for m, h in zip(images.tolist(), held_out.tolist()):
        texts = decode(captions[order[starts[m]:starts[m] + counts[m]]], idx_to_word)
        candidates.append(texts.pop(h))
        references.append(texts)
    return {"split": "val", "num_samples": int(num_samples),
            "unigram_bleu": round(unigram, 4),
            "corpus_bleu": {k: round(v, 4) for k, v in
                            metrics.corpus_bleu_1_to_4(references, candidates).items()}}


def cache_dir_default():
    """$FASTRNN_CACHE, else $XDG_CACHE_HOME/fastrnn, else ~/.cache/fastrnn."""
    cache = config.get(config.CACHE)
    if cache is not None:
        return cache
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fastrnn")


def ensure_dataset(size="small", seed=0, cache_dir=None, progress=True):
    """The folder of a cached synthetic dataset, generated there first if absent."""
    split_sizes(size)   # fails early on a bad size
    name = f"synthetic-coco-v{GENERATOR_VERSION}-{size}-seed{seed}"
    path = os.path.join(cache_dir or cache_dir_default(), name)
    if os.path.isfile(os.path.join(path, "synthetic_info.json")):
        return path
    try:
        # folders appear complete or not at all, so one without its info file is foreign
        generate(path, size=size, seed=seed, progress=progress, overwrite=os.path.exists(path))
    except FileExistsError:   # another process finished it first
        pass
    return path
