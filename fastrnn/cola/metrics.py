"""Scores of binary predictions: accuracy and Matthews correlation (MCC, CoLA's metric)."""
import math

import numpy as np

__all__ = ["accuracy", "matthews_corrcoef"]


def accuracy(y_true, y_pred):
    """Share of positions where the two binary label vectors agree."""
    y_true, y_pred = _binary(y_true, y_pred, "accuracy")
    return float(np.mean(y_true == y_pred)) if y_true.size else 0.0


def matthews_corrcoef(y_true, y_pred):
    """Matthews correlation of two binary label vectors; 0 when a margin is constant."""
    y_true, y_pred = _binary(y_true, y_pred, "matthews_corrcoef")
    tp = float(np.sum(y_true & y_pred))
    tn = float(np.sum(~y_true & ~y_pred))
    fp = float(np.sum(~y_true & y_pred))
    fn = float(np.sum(y_true & ~y_pred))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator


def _binary(y_true, y_pred, fn):
    y_true = np.asarray(y_true).astype(bool).ravel()
    y_pred = np.asarray(y_pred).astype(bool).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{fn}: y_true and y_pred must have the same length, "
                         f"got {y_true.size} and {y_pred.size}")
    return y_true, y_pred
