"""Scores of binary predictions: accuracy and Matthews correlation (MCC, CoLA's metric).

``matthews_corrcoef`` has one implementation, in ``fastrnn.metrics``; it is
re-exported here so that the CoLA code finds its metrics in its own package.
Labels are bool or 0/1 numbers: threshold probabilities first (``probs >= 0.5``).
"""
import numpy as np

from fastrnn.metrics import matthews_corrcoef

__all__ = ["accuracy", "matthews_corrcoef"]


def accuracy(y_true, y_pred):
    """Share of positions where the two binary label vectors agree (0 for none)."""
    y_true, y_pred = _labels("y_true", y_true), _labels("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"accuracy: y_true and y_pred must have the same length, "
                         f"got {y_true.size} and {y_pred.size}")
    return float(np.mean(y_true == y_pred)) if y_true.size else 0.0


def _labels(name, labels):
    a = np.asarray(labels).ravel()
    if a.dtype.kind not in "biuf" or (a.dtype.kind != "b" and ((a != 0) & (a != 1)).any()):
        raise ValueError(f"accuracy: {name} must hold only 0 and 1 (or bool) labels; "
                         f"threshold probabilities first, e.g. probs >= 0.5")
    return a.astype(bool)
