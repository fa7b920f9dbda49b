"""Scores of binary predictions: accuracy and Matthews correlation (MCC, CoLA's metric).

Labels are bool or 0/1 numbers: threshold probabilities first (``probs >= 0.5``).
"""
import math

import numpy as np

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


def matthews_corrcoef(y_true, y_pred):
    """Matthews correlation of two binary label vectors; 0 when a margin is constant.

    Labels are bool or numbers that are all 0 or 1: threshold probabilities first
    (``probs >= 0.5``); other values raise ValueError instead of being cast to bool.
    """
    y_true = _binary_labels("y_true", y_true)
    y_pred = _binary_labels("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"matthews_corrcoef: y_true and y_pred must have the same length, "
                         f"got {y_true.size} and {y_pred.size}")
    tp = float(np.sum(y_true & y_pred))
    tn = float(np.sum(~y_true & ~y_pred))
    fp = float(np.sum(~y_true & y_pred))
    fn = float(np.sum(y_true & ~y_pred))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator


def _binary_labels(name, labels):
    a = np.asarray(labels)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"matthews_corrcoef: {name} must hold 0/1 (or bool) labels, "
                        f"got dtype {a.dtype}")
    a = a.ravel()
    if a.dtype.kind != "b":
        other = (a != 0) & (a != 1)
        if other.any():
            at = int(np.flatnonzero(other)[0])
            raise ValueError(f"matthews_corrcoef: {name} must hold only 0 and 1 (or bool) "
                             f"labels, got {a[at].item()!r} at index {at}; threshold "
                             f"probabilities first, e.g. probs >= 0.5")
    return a.astype(bool)
