"""One knob for every thread pool fastrnn runs on: Numba, OpenMP (Cython) and BLAS.

The compiled kernels and the BLAS products alternate step by step, so the pools
must agree on how many cores they may use, or they oversubscribe the machine.
``set_num_threads(n)`` (or ``FASTRNN_NUM_THREADS=n`` in the environment, read on
first use) sets all three:

- Numba: ``numba.set_num_threads(n)``, capped at Numba's pool size
  (``NUMBA_NUM_THREADS``, by default the number of cores). Numba keeps this per
  Python thread; it is set for the thread that calls the knob.
- OpenMP: ``fastrnn.backends._cython_kernels.set_num_threads(n)`` (which calls
  ``omp_set_num_threads``).
- BLAS: ``threadpoolctl.threadpool_limits(n, user_api="blas")``, held for the
  rest of the process.
- PyTorch (when it is imported, e.g. by the oneDNN GEMM provider of
  ``fastrnn.gemm``): ``torch.set_num_threads(n)``.

Nothing heavy is imported here. A pool is only touched once its module is loaded:
backends call ``apply_to_loaded_backends()`` when they load (the Numba backend
does so on import; the Cython backend should too), which applies the current
setting to every pool loaded so far. With neither the knob nor the environment
variable set, fastrnn leaves every pool at its library default.
"""
import numbers
import os
import sys
import threading

ENV = "FASTRNN_NUM_THREADS"
_CYTHON_MODULE = "fastrnn.backends._cython_kernels"

_lock = threading.Lock()
_requested = {"n": None, "env_read": False}
_applied = {}        # pool name -> thread count last applied to it
_blas_limiter = []   # the live threadpoolctl limiter (kept so its limit holds)


def _check(n, source):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{source} must be an integer number of threads >= 1, "
                        f"got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"{source} must be an integer number of threads >= 1, got {n}")
    return int(n)


def _from_env():
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r} must be an integer number of threads >= 1") from None
    return _check(n, f"{ENV}={raw!r}")


def _wanted():
    """The requested thread count (knob, else environment), or None for library defaults."""
    if _requested["n"] is None and not _requested["env_read"]:
        _requested["n"] = _from_env()
        _requested["env_read"] = True
    return _requested["n"]


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n):
    """Use ``n`` threads (int >= 1) in the Numba, OpenMP and BLAS pools from now on."""
    n = _check(n, "set_num_threads: n")
    with _lock:
        _requested["n"] = n
        _requested["env_read"] = True  # an explicit call overrides the environment
    apply_to_loaded_backends()


def get_num_threads():
    """The thread count fastrnn asks of its pools: the knob, else ``$FASTRNN_NUM_THREADS``,
    else the number of cores this process may run on."""
    with _lock:
        n = _wanted()
    return _cores() if n is None else n


def apply_to_loaded_backends():
    """Apply the requested thread count to every pool whose module is loaded.

    Backends call this when they load; it is cheap and idempotent. Returns a dict
    pool name -> threads applied (empty when nothing was requested).
    """
    with _lock:
        n = _wanted()
        if n is None:
            return {}
        if "numba" in sys.modules:
            _apply("numba", n, _set_numba)
        if _CYTHON_MODULE in sys.modules:
            _apply("openmp", n, sys.modules[_CYTHON_MODULE].set_num_threads)
        _apply("blas", n, _set_blas)
        if "torch" in sys.modules:
            _apply("torch", n, sys.modules["torch"].set_num_threads)
        return dict(_applied)


def _apply(pool, n, setter):
    if _applied.get(pool) != n:
        setter(n)
        _applied[pool] = n


def _set_numba(n):
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _set_blas(n):
    from threadpoolctl import threadpool_limits
    _blas_limiter[:] = [threadpool_limits(limits=n, user_api="blas")]
