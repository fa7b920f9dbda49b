"""Deprecated: the CoLA language-model features moved to ``fastrnn.cola.lm``.

This module re-exports them for one release and will then be removed.
"""
import warnings

from fastrnn.cola.lm import *  # noqa: F403
from fastrnn.cola.lm import BOS, EOS, OOV, __all__  # noqa: F401

warnings.warn("fastrnn.cola_lm is deprecated: import from fastrnn.cola.lm",
              DeprecationWarning, stacklevel=2)
