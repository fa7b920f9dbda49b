"""The CoLA sentence classifier: a one-block Transformer trained from scratch on CoLA.

    from fastrnn.cola import TrainConfig, train, load_checkpoint
    result = train(TrainConfig(data="path/to/cola", epochs=5, out="cola.pt"))
    result.report["test_mcc"]
    model, checkpoint = load_checkpoint("cola.pt")

Modules: ``transformer`` (the model), ``data`` (reading and encoding CoLA),
``lm`` (n-gram language-model features), ``metrics`` (accuracy, Matthews
correlation), ``config`` (``TrainConfig``), ``models`` (the feature term and
ensembles around the Transformer), ``training`` (the training run),
``checkpoint`` (the versioned checkpoint file).

The data, metrics and configuration need only NumPy; the names that need torch
(the model, training, checkpoints) are imported on first use, so
``from fastrnn.cola import TrainConfig`` works without torch installed.
"""
import importlib

from fastrnn.cola.config import POOLINGS, SCHEDULES, ConfigError, TrainConfig
from fastrnn.cola.data import ColaData, ColaSplit, load_cola
from fastrnn.cola.lm import lm_features
from fastrnn.cola.metrics import accuracy, matthews_corrcoef

# name -> module that defines it; these need torch.
_LAZY = {
    "ClassificationTransformer": "fastrnn.cola.transformer",
    "WithFeatures": "fastrnn.cola.models",
    "MeanEnsemble": "fastrnn.cola.models",
    "train": "fastrnn.cola.training",
    "TrainResult": "fastrnn.cola.training",
    "evaluate": "fastrnn.cola.training",
    "save_checkpoint": "fastrnn.cola.checkpoint",
    "load_checkpoint": "fastrnn.cola.checkpoint",
}

__all__ = ["TrainConfig", "ConfigError", "POOLINGS", "SCHEDULES", "ColaData", "ColaSplit",
           "load_cola", "lm_features", "accuracy", "matthews_corrcoef", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastrnn.cola' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
