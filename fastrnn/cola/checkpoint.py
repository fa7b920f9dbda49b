"""CoLA classifier checkpoints: one versioned torch file of plain data, written atomically.

The file is a ``torch.save`` of a dict that holds only tensors, dicts, lists,
strings, numbers, booleans and None, so ``load_checkpoint`` reads it with
``torch.load(..., weights_only=True)`` (nothing is unpickled but data):

    format, version     "fastrnn-cola-checkpoint", VERSION
    state_dict          the weights (an ensemble's as ``members.<k>.*``)
    config              the Transformer's constructor arguments (``model.config()``)
    word_to_ix          the vocabulary
    ensemble            number of members K (1: one model)
    num_features        LM features of the ``WithFeatures`` term (0: none)
    subword_to_ix, subwords   n-gram vocabulary and (MIN, MAX) lengths, or None
    threshold, epoch, val_mcc, mask   the kept model's selection on validation
    train_config        ``dataclasses.asdict`` of the run's ``TrainConfig``
    result, history     the final report and per-epoch history (when training ended)

It is written through ``fastrnn._io.write_atomically`` (temporary file, fsync, rename),
so an interrupted save leaves the previous file whole.
"""
import dataclasses
import os
import pickle

import numpy as np
import torch

from fastrnn._io import write_atomically
from fastrnn.captioning.checkpoint import CheckpointError
from fastrnn.cola.models import MeanEnsemble, WithFeatures
from fastrnn.cola.transformer import ClassificationTransformer

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "fastrnn-cola-checkpoint"
VERSION = 1
_RETRAIN = "retrain it with this fastrnn (fastrnn-cola --out PATH)"


def save_checkpoint(path, model, best, config, result=None, data=None):
    """Write ``best`` (its ``state``, ``threshold``, ``epoch``, ``val_mcc``) of
    ``model`` trained with ``config`` (a TrainConfig) to ``path``, atomically.

    ``data`` (the ColaData trained on) adds the n-gram vocabulary, so that new
    sentences can be encoded as in training; ``result`` the final report.
    """
    single = model.members[0] if isinstance(model, MeanEnsemble) else model
    checkpoint = dict(
        format=FORMAT, version=VERSION, state_dict=best["state"],
        word_to_ix=model.word_to_ix, config=model.config(),
        ensemble=len(model.members) if isinstance(model, MeanEnsemble) else 1,
        num_features=getattr(single, "num_features", 0),
        subword_to_ix=data.subword_to_ix if data is not None else None,
        subwords=data.subword_range if data is not None else None,
        threshold=best["threshold"], epoch=best["epoch"], val_mcc=best["val_mcc"],
        mask=config.mask, train_config=dataclasses.asdict(config))
    if result is not None:
        checkpoint["result"] = {k: v for k, v in result.items() if k != "history"}
        checkpoint["history"] = result["history"]
    checkpoint = {key: value if key == "state_dict" else _plain(value)
                  for key, value in checkpoint.items()}
    write_atomically(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path):
    """The model of a checkpoint written by ``save_checkpoint`` (a ``MeanEnsemble``
    for an ensemble), in eval mode, and the checkpoint dict.

    Raises FileNotFoundError for a missing file and ``CheckpointError`` (a
    ValueError) naming the file for anything that is not a checkpoint of this
    format and version.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"CoLA checkpoint {path} does not exist (fastrnn-cola --out "
                                f"PATH writes one)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: holds pickled Python objects, not plain data, so it is not loaded "
            f"(an unversioned checkpoint from an older fastrnn-cola, or not a fastrnn-cola "
            f"checkpoint; {_RETRAIN}): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable torch file ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(checkpoint, dict) or "format" not in checkpoint:
        raise CheckpointError(f"{path} is not a versioned fastrnn-cola checkpoint (no 'format' "
                              f"field: written by an older fastrnn-cola, or something else; "
                              f"{_RETRAIN})")
    if checkpoint["format"] != FORMAT:
        raise CheckpointError(f"{path}: format {checkpoint['format']!r}, expected {FORMAT!r}")
    version = checkpoint.get("version")
    if version != VERSION:
        hint = "upgrade fastrnn to read it" if isinstance(version, int) and version > VERSION \
            else _RETRAIN
        raise CheckpointError(f"{path}: fastrnn-cola checkpoint version {version!r}, this "
                              f"fastrnn reads version {VERSION}: {hint}")
    if checkpoint.get("subwords") is not None:
        checkpoint["subwords"] = tuple(checkpoint["subwords"])
    members = [ClassificationTransformer(checkpoint["word_to_ix"], **checkpoint["config"])
               for _ in range(checkpoint["ensemble"])]
    if checkpoint["num_features"]:
        members = [WithFeatures(m, checkpoint["num_features"]) for m in members]
    model = members[0] if len(members) == 1 else MeanEnsemble(members)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def _plain(value):
    """value with NumPy scalars and arrays as Python numbers and lists (and tuples
    kept), so that ``weights_only`` loading accepts it."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
