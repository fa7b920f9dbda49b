"""Caption metrics: the CS231n unigram sentence BLEU and corpus BLEU-1..4 (nltk).

Two layers:
- on decoded text, for anything that already has captions as strings
  (``unigram_bleu``, ``mean_unigram_bleu``, ``corpus_bleu_1_to_4``); the synthetic
  generator's oracle score uses these;
- on a model and a data dict (``reference_bleu``, ``corpus_bleu_scores``), which draw
  captions/images, ask ``model.sample`` for captions and score them with the layer above.

Captions are strings: a list of tokens where a caption belongs, or a bare
string where a list of captions belongs, raise instead of giving a meaningless
score. nltk, tqdm and the data module are imported on first use, so importing
this module stays cheap.
"""
import warnings

import numpy as np

# Tokens that carry no caption content: CS231n's BLEU_score drops <START>, <END>, <UNK>.
# <NULL> never survives decode_captions, but text from elsewhere may still hold it.
SPECIAL_TOKENS = frozenset({"<START>", "<END>", "<UNK>", "<NULL>"})

BLEU_WEIGHTS = {
    "bleu1": (1.0,),
    "bleu2": (1 / 2,) * 2,
    "bleu3": (1 / 3,) * 3,
    "bleu4": (1 / 4,) * 4,
}


def clean_caption(text, fn="clean_caption", name="text"):
    """Caption text -> its word tokens without <START>, <END>, <UNK>, <NULL>.
    (``fn`` and ``name`` say who passed ``text``, for the error message.)"""
    if not isinstance(text, str):
        raise TypeError(f"{fn}: {name} must be a caption str such as 'a man riding a horse', "
                        f"got {type(text).__name__} {_preview(text)}")
    return [w for w in text.split() if w not in SPECIAL_TOKENS]


def _preview(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _caption_list(fn, name, captions):
    """captions must be a list/tuple (or array) of caption strings, not one string."""
    if isinstance(captions, (str, bytes)) or not hasattr(captions, "__len__"):
        raise TypeError(f"{fn}: {name} must be a list of caption strings, got "
                        f"{type(captions).__name__} {_preview(captions)}")
    return captions


def unigram_bleu(reference, candidate, fn="unigram_bleu"):
    """Sentence BLEU-1 of a candidate caption against one reference (CS231n's BLEU_score)."""
    from nltk.translate.bleu_score import sentence_bleu
    ref = clean_caption(reference, fn, "reference")
    hyp = clean_caption(candidate, fn, "candidate")
    with warnings.catch_warnings():
        # nltk warns when a candidate shares no word with the reference; the score is 0 then.
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref], hyp, weights=(1.0,)))


def mean_unigram_bleu(references, candidates):
    """Average of unigram_bleu over aligned lists of reference and candidate captions."""
    _caption_list("mean_unigram_bleu", "references", references)
    _caption_list("mean_unigram_bleu", "candidates", candidates)
    if len(references) != len(candidates):
        raise ValueError(f"mean_unigram_bleu: {len(references)} references but "
                         f"{len(candidates)} candidates; they must pair up one to one")
    if not references:
        raise ValueError("mean_unigram_bleu: no captions to score")
    return float(np.mean([unigram_bleu(r, c, "mean_unigram_bleu")
                          for r, c in zip(references, candidates)]))


def corpus_bleu_1_to_4(references, candidates):
    """Corpus BLEU-1..4: candidates[i] against every caption in references[i].

    references: a list (one entry per image) of lists of caption strings.
    Returns {'bleu1': ..., 'bleu4': ...}.
    """
    from nltk.translate.bleu_score import corpus_bleu
    fn = "corpus_bleu_1_to_4"
    _caption_list(fn, "references", references)
    _caption_list(fn, "candidates", candidates)
    if len(references) != len(candidates):
        raise ValueError(f"corpus_bleu_1_to_4: {len(references)} reference lists but "
                         f"{len(candidates)} candidates; they must pair up one to one")
    if not references:
        raise ValueError("corpus_bleu_1_to_4: no captions to score")
    refs = [[clean_caption(r, fn, f"references[{i}][{j}]") for j, r in
             enumerate(_caption_list(fn, f"references[{i}]", image_refs))]
            for i, image_refs in enumerate(references)]
    if any(not image_refs for image_refs in refs):
        raise ValueError("corpus_bleu_1_to_4: every candidate needs at least one reference")
    hyps = [clean_caption(c, fn, f"candidates[{i}]") for i, c in enumerate(candidates)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: float(corpus_bleu(refs, hyps, weights=w)) for name, w in BLEU_WEIGHTS.items()}


def model_captions(model, features, idx_to_word, batch_size=500, beam_size=1, progress=True):
    """Decoded text of ``model.sample`` for every row of features (N, D), in batches."""
    from tqdm.auto import tqdm

    from fastrnn.captioning.data.coco import decode_captions
    kwargs = {} if beam_size == 1 else {"beam_size": beam_size}
    texts = []
    starts = range(0, len(features), batch_size)
    for start in tqdm(starts, desc="sampling captions", unit="batch", disable=not progress,
                      leave=False):
        tokens = model.sample(features[start:start + batch_size], max_length=30, **kwargs)
        texts.extend(decode_captions(np.atleast_2d(tokens), idx_to_word))
    return texts


def reference_bleu(model, data, split="val", num_samples=1000, seed=0, batch_size=500,
                   beam_size=1, progress=True):
    """The reference metric (CS231n's evaluation): mean unigram BLEU over ``num_samples`` random captions.

    Each drawn ground-truth caption is the single reference for the model's caption of
    its image (drawn with replacement, as CS231n's evaluate_model does).
    """
    from fastrnn.captioning.data.coco import decode_captions, sample_coco_minibatch
    _check_split(data, split)
    captions, features, _ = sample_coco_minibatch(data, num_samples, split,
                                                  rng=np.random.default_rng(seed))
    references = decode_captions(captions, data["idx_to_word"])
    candidates = model_captions(model, features, data["idx_to_word"], batch_size, beam_size,
                                progress)
    return mean_unigram_bleu(references, candidates)


def corpus_bleu_scores(model, data, split="val", num_images=1000, seed=0, beam_size=1,
                       batch_size=500, progress=True):
    """Corpus BLEU-1..4 of the model's captions for ``num_images`` distinct images of the split.

    Every ground-truth caption of an image is a reference for it.
    """
    _check_split(data, split)
    captions, image_idxs = data[f"{split}_captions"], data[f"{split}_image_idxs"]
    images = np.unique(image_idxs)
    chosen = np.random.default_rng(seed).choice(images, min(num_images, len(images)),
                                                replace=False)
    keep = np.isin(image_idxs, chosen)   # decode only the captions that will be references
    refs_by_image = captions_by_image(captions[keep], image_idxs[keep], data["idx_to_word"])
    candidates = model_captions(model, data[f"{split}_features"][chosen], data["idx_to_word"],
                                batch_size, beam_size, progress)
    return corpus_bleu_1_to_4([refs_by_image[i] for i in chosen.tolist()], candidates)


def captions_by_image(captions, image_idxs, idx_to_word):
    """{image index: [decoded caption, ...]} for every image that has a caption."""
    from fastrnn.captioning.data.coco import decode_captions
    groups = {}
    for idx, text in zip(image_idxs.tolist(), decode_captions(captions, idx_to_word)):
        groups.setdefault(idx, []).append(text)
    return groups


def _check_split(data, split):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
