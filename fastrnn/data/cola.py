"""Deprecated: the CoLA reader moved to ``fastrnn.cola.data`` (``fastrnn.cola.load_cola``).

This module re-exports it for one release and will then be removed.
"""
import warnings

from fastrnn.cola.data import *  # noqa: F403
from fastrnn.cola.data import COLA_URL, N_TRAIN, __all__  # noqa: F401

warnings.warn("fastrnn.data.cola is deprecated: import from fastrnn.cola.data "
              "(load_cola also from fastrnn.cola)", DeprecationWarning, stacklevel=2)
