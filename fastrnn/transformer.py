"""Deprecated: the CoLA Transformer moved to ``fastrnn.cola`` (``fastrnn.cola.transformer``).

This module re-exports it for one release and will then be removed.
"""
import warnings

from fastrnn.cola.config import POOLINGS
from fastrnn.cola.metrics import matthews_corrcoef
from fastrnn.cola.transformer import ClassificationTransformer

warnings.warn("fastrnn.transformer is deprecated: import ClassificationTransformer from "
              "fastrnn.cola (and matthews_corrcoef from fastrnn.cola.metrics)",
              DeprecationWarning, stacklevel=2)

__all__ = ["ClassificationTransformer", "POOLINGS", "matthews_corrcoef"]
