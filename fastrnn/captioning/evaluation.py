"""Scores and sample captions of a trained captioning model on a COCO-layout data dict
(what fastrnn-train reports at the end and fastrnn-eval reports for a checkpoint)."""
import json
import os

import numpy as np

from fastrnn.captioning import metrics
from fastrnn.captioning.data import decode_captions

__all__ = ["evaluate", "sample_captions", "read_oracle", "pca_for", "check_compatible",
           "NUM_SHOWN"]

NUM_SHOWN = 5   # sample captions shown next to their ground truth


def read_oracle(data_dir):
    """The synthetic generator's oracle scores, if this folder has them."""
    path = os.path.join(data_dir, "synthetic_info.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            oracle = json.load(f).get("oracle")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable synthetic_info.json ({err}); regenerate the "
                       f"folder with fastrnn-data synth") from None
    if not isinstance(oracle, dict) or not oracle:
        return None
    return {"reference_bleu": oracle.get("unigram_bleu"), **oracle.get("corpus_bleu", {})}


def evaluate(model, data, split="val", num_samples=1000, beam_size=1, seed=0, progress=True):
    """{'reference_bleu': unigram BLEU over num_samples captions, 'bleu1'..'bleu4': corpus BLEU
    over num_samples images} of the model's captions on a split."""
    scores = {"reference_bleu": metrics.reference_bleu(
        model, data, split=split, num_samples=num_samples, seed=seed, beam_size=beam_size,
        progress=progress)}
    scores.update(metrics.corpus_bleu_scores(model, data, split=split, num_images=num_samples,
                                             seed=seed, beam_size=beam_size, progress=progress))
    return scores


def sample_captions(model, data, split="val", count=NUM_SHOWN, beam_size=1, seed=0):
    """[{'image', 'url', 'generated', 'ground_truth': [...]}] for ``count`` random images."""
    image_idxs = data[f"{split}_image_idxs"]
    images = np.random.default_rng(seed).choice(np.unique(image_idxs), count, replace=False) \
        if len(np.unique(image_idxs)) >= count else np.unique(image_idxs)
    generated = model.sample(data[f"{split}_features"][images], max_length=30, beam_size=beam_size)
    texts = decode_captions(np.atleast_2d(generated), data["idx_to_word"])
    shown = []
    for image, text in zip(images.tolist(), texts):
        truth = decode_captions(data[f"{split}_captions"][image_idxs == image], data["idx_to_word"])
        shown.append({"image": image, "url": str(data[f"{split}_urls"][image]),
                      "generated": _strip(text), "ground_truth": [_strip(t) for t in truth]})
    return shown


def _strip(text):
    return " ".join(w for w in text.split() if w not in ("<START>", "<END>"))


def pca_for(model, data_dir):
    """Whether the model reads the 512-d PCA features or the raw fc7 ones of this folder."""
    if model.input_dim == 512:
        return True
    if os.path.isfile(os.path.join(data_dir, "train2014_vgg16_fc7.h5")):
        return False
    raise ValueError(f"the model reads {model.input_dim}-d features, but {data_dir} only has the "
                   f"512-d PCA features")


def check_compatible(model, data, data_dir):
    if len(data["word_to_idx"]) != model.vocab_size or any(
            model.word_to_idx.get(w) != i for w, i in data["word_to_idx"].items()):
        raise ValueError(f"the model's vocabulary ({model.vocab_size} words) is not the one of "
                       f"{data_dir} ({len(data['word_to_idx'])} words); evaluate it on the data "
                       f"it was trained on")
    if data["val_features"].shape[1] != model.input_dim:
        raise ValueError(f"the model reads {model.input_dim}-d features but {data_dir} has "
                       f"{data['val_features'].shape[1]}-d ones")
