"""fastrnn: a fast, exact CPU engine for recurrent-network training.

``fastrnn.layers`` is the public layer API (CS231n ``rnn_layers.py`` contract);
the NumPy backend is the reference that every compiled backend is tested against.
"""
from fastrnn.backends import available_backends, get_backend, set_backend, use_backend
from fastrnn.precision import get_precision, set_precision, use_precision
from fastrnn.threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

__all__ = ["available_backends", "get_backend", "set_backend", "use_backend",
           "get_precision", "set_precision", "use_precision",
           "get_num_threads", "set_num_threads", "__version__"]
