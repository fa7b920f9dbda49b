"""The image-captioning trainer: model, fused training engine, solver, checkpoints,
COCO data and its synthetic twin, BLEU, data-parallel training, the PyTorch baseline.

    from fastrnn.captioning import CaptioningRNN, CaptioningSolver, load_coco_data

Modules: ``model`` (CaptioningRNN: the CS231n model, reference loss, sampling),
``engine`` (the fused training path), ``solver`` (CaptioningSolver), ``checkpoint``,
``metrics`` (BLEU), ``data`` (``coco`` loader, ``synthetic`` generator),
``evaluation`` (scores and sample captions of a trained model), ``distributed``
(torch.distributed data parallelism), ``torch_baseline`` (the PyTorch model it is
benchmarked against). Names below load their module on first use, so importing the
package stays cheap.
"""
import importlib

_EXPORTS = {
    "CaptioningRNN": "model",
    "CaptioningSolver": "solver",
    "TrainingDiverged": "solver",
    "captioning_loss": "engine",
    "load_model": "checkpoint",
    "load_coco_data": "data",
    "sample_coco_minibatch": "data",
    "decode_captions": "data",
    "default_data_dir": "data",
    "reference_bleu": "metrics",
    "corpus_bleu_scores": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastrnn.captioning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fastrnn.captioning.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
