"""Caption metrics: the CS231n unigram sentence BLEU and corpus BLEU-1..4 (nltk).

Two layers:
- on decoded text, for anything that already has captions as strings
  (``unigram_bleu``, ``mean_unigram_bleu``, ``corpus_bleu_1_to_4``); the synthetic
  generator's oracle score uses these;
- on a model and a data dict (``reference_bleu``, ``corpus_bleu_scores``), which draw
  captions/images, ask ``model.sample`` for captions and score them with the layer above.
"""
import warnings

import numpy as np
from nltk.translate.bleu_score import corpus_bleu, sentence_bleu
from tqdm.auto import tqdm

from fastrnn.data.coco import decode_captions, sample_coco_minibatch

# Tokens that carry no caption content: CS231n's BLEU_score drops <START>, <END>, <UNK>.
# <NULL> never survives decode_captions, but text from elsewhere may still hold it.
SPECIAL_TOKENS = frozenset({"<START>", "<END>", "<UNK>", "<NULL>"})

BLEU_WEIGHTS = {
    "bleu1": (1.0,),
    "bleu2": (1 / 2,) * 2,
    "bleu3": (1 / 3,) * 3,
    "bleu4": (1 / 4,) * 4,
}


def clean_caption(text):
    """Caption text -> its word tokens without <START>, <END>, <UNK>, <NULL>."""
    if not isinstance(text, str):
        raise TypeError(f"clean_caption: text must be a str, got {type(text).__name__}")
    return [w for w in text.split() if w not in SPECIAL_TOKENS]


def unigram_bleu(reference, candidate):
    """Sentence BLEU-1 of a candidate caption against one reference (CS231n's BLEU_score)."""
    with warnings.catch_warnings():
        # nltk warns when a candidate shares no word with the reference; the score is 0 then.
        warnings.simplefilter("ignore")
        return float(sentence_bleu([clean_caption(reference)], clean_caption(candidate),
                                   weights=(1.0,)))


def mean_unigram_bleu(references, candidates):
    """Average of unigram_bleu over aligned lists of reference and candidate captions."""
    if len(references) != len(candidates):
        raise ValueError(f"mean_unigram_bleu: {len(references)} references but "
                         f"{len(candidates)} candidates; they must pair up one to one")
    if not references:
        raise ValueError("mean_unigram_bleu: no captions to score")
    return float(np.mean([unigram_bleu(r, c) for r, c in zip(references, candidates)]))


def corpus_bleu_1_to_4(references, candidates):
    """Corpus BLEU-1..4: candidates[i] against every caption in references[i].

    references: a list (one entry per image) of lists of caption strings.
    Returns {'bleu1': ..., 'bleu4': ...}.
    """
    if len(references) != len(candidates):
        raise ValueError(f"corpus_bleu_1_to_4: {len(references)} reference lists but "
                         f"{len(candidates)} candidates; they must pair up one to one")
    if not references:
        raise ValueError("corpus_bleu_1_to_4: no captions to score")
    refs = [[clean_caption(r) for r in image_refs] for image_refs in references]
    if any(not image_refs for image_refs in refs):
        raise ValueError("corpus_bleu_1_to_4: every candidate needs at least one reference")
    hyps = [clean_caption(c) for c in candidates]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: float(corpus_bleu(refs, hyps, weights=w)) for name, w in BLEU_WEIGHTS.items()}


def model_captions(model, features, idx_to_word, batch_size=500, beam_size=1, progress=True):
    """Decoded text of ``model.sample`` for every row of features (N, D), in batches."""
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
    """The SPEC reference metric: mean unigram BLEU over ``num_samples`` random captions.

    Each drawn ground-truth caption is the single reference for the model's caption of
    its image (drawn with replacement, as CS231n's evaluate_model does).
    """
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
    groups = {}
    for idx, text in zip(image_idxs.tolist(), decode_captions(captions, idx_to_word)):
        groups.setdefault(idx, []).append(text)
    return groups


def _check_split(data, split):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
