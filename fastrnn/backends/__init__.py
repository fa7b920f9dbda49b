"""Backend registry: which implementation of the layer functions is active.

A backend is a module that defines some or all of the functions in ``API``,
``KERNELS`` and ``OPTIMIZER_KERNELS``;
whatever it leaves out falls back to the NumPy reference (``numpy_backend``),
so a compiled backend overrides exactly the kernels it accelerates.

Backends are probed cheaply (no import of numba or of the compiled extension)
by ``available_backends()`` and loaded on first use, so ``import fastrnn`` stays
fast.
"""
import contextlib
import importlib
import importlib.util
import threading
import warnings
from collections.abc import Iterator

from fastrnn import config

API = (
    "affine_forward", "affine_backward",
    "rnn_step_forward", "rnn_step_backward", "rnn_forward", "rnn_backward",
    "word_embedding_forward", "word_embedding_backward",
    "lstm_step_forward", "lstm_step_backward", "lstm_forward", "lstm_backward",
    "temporal_affine_forward", "temporal_affine_backward",
    "temporal_softmax_loss",
)

# In-place kernels used by the fused training path (fastrnn.captioning.engine); their
# contract is documented on the reference versions in numpy_backend.
KERNELS = ("lstm_gates_forward", "lstm_gates_backward", "softmax_cross_entropy_rows",
           "scatter_add_rows")

# In-place optimizer kernels used by fastrnn.optim.adam_in_place (the solver's Adam);
# their contract is documented on the reference versions in numpy_backend.
OPTIMIZER_KERNELS = ("adam_update",)

# name -> (module implementing it, modules that must be importable for it).
# Listed fastest first: the default backend is the first available one.
_REGISTRY = {
    "cython": ("fastrnn.backends.cython_backend", ("fastrnn.backends._cython_kernels",)),
    "numba": ("fastrnn.backends.numba_backend", ("numba",)),
    "numpy": ("fastrnn.backends.numpy_backend", ()),
}
BACKENDS = tuple(_REGISTRY)   # every backend fastrnn knows, whether this install has it or not
REFERENCE = "numpy"

_REBUILD_HINT = {
    "cython": "the compiled extension fastrnn.backends._cython_kernels is missing or broken; "
              "rebuild it with `pip install --force-reinstall --no-deps .` from the source "
              "checkout (needs a C compiler with OpenMP)",
    "numba": "install numba (`pip install numba`)",
}


class Backend:
    """The resolved functions of one backend, as attributes (``be.lstm_forward``)."""

    def __init__(self, name, module, reference=None):
        self.name = name
        self.module = module
        for fn in API + KERNELS + OPTIMIZER_KERNELS:
            impl = getattr(module, fn, None)
            if impl is None:
                impl = getattr(reference, fn)
            setattr(self, fn, impl)

    def __repr__(self):
        return f"<fastrnn backend {self.name!r}>"


_loaded = {}
_lock = threading.RLock()  # load_backend recurses to load the reference
_state = threading.local()  # per-thread override set by use_backend()
_global = {"name": None}    # set_backend() / default


def _probe(name):
    module, needs = _REGISTRY[name]
    try:
        return all(importlib.util.find_spec(m) is not None for m in (module,) + needs)
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Names of the backends this install can run, fastest first; 'numpy' is always there."""
    return [name for name in _REGISTRY if _probe(name)]


def load_backend(name: str) -> "Backend":
    """The ``Backend`` object for ``name``, importing it on first use."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown fastrnn backend {name!r}; available backends: "
                         f"{available_backends()}")
    with _lock:
        if name not in _loaded:
            module_name, _ = _REGISTRY[name]
            if not _probe(name):
                raise ImportError(f"fastrnn backend {name!r} is not available in this install: "
                                  f"{_REBUILD_HINT.get(name, '')}. Available backends: "
                                  f"{available_backends()}")
            try:
                module = importlib.import_module(module_name)
            except ImportError as err:
                raise ImportError(f"fastrnn backend {name!r} failed to import ({err}); "
                                  f"{_REBUILD_HINT.get(name, '')}") from err
            from fastrnn import threads
            threads.apply_to_loaded_backends()   # FASTRNN_NUM_THREADS also limits BLAS
            reference = None if name == REFERENCE else load_backend(REFERENCE).module
            _loaded[name] = Backend(name, module, reference)
        return _loaded[name]


def _default_name():
    env = config.get(config.BACKEND)
    if env is not None:
        return env
    for name in available_backends():
        try:
            load_backend(name)
            return name
        except ImportError as err:
            warnings.warn(f"skipping fastrnn backend {name!r}: {err}", RuntimeWarning, stacklevel=3)
    return REFERENCE


def set_backend(name: str) -> None:
    """Make ``name`` the active backend for every thread (raises if it cannot run here)."""
    load_backend(name)
    _global["name"] = name


def get_backend() -> str:
    """Name of the active backend: a ``use_backend`` block, else ``set_backend``,
    else ``$FASTRNN_BACKEND``, else the fastest available."""
    override = getattr(_state, "name", None)
    if override is not None:
        return override
    if _global["name"] is None:
        _global["name"] = _default_name()
    return _global["name"]


def active():
    """The active ``Backend`` object (used by ``fastrnn.layers`` to dispatch)."""
    return load_backend(get_backend())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator["Backend"]:
    """Context manager: run the enclosed block (in this thread) on backend ``name``."""
    load_backend(name)
    previous = getattr(_state, "name", None)
    _state.name = name
    try:
        yield load_backend(name)
    finally:
        _state.name = previous
