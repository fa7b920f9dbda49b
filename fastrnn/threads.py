"""One knob for every thread pool fastrnn runs on: Numba, OpenMP (Cython) and BLAS.

The compiled kernels and the BLAS products alternate step by step, so the pools
must agree on how many cores they may use, or they oversubscribe the machine.
``set_num_threads(n)`` (or ``FASTRNN_NUM_THREADS=n`` in the environment, read on
first use) sets all three; a count outside [1, ``MAX_THREADS``] is refused with a
ValueError (``check_num_threads`` is the one check, also used by the command lines):

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

from fastrnn import config

ENV = config.NUM_THREADS
_CYTHON_MODULE = "fastrnn.backends._cython_kernels"

_lock = threading.Lock()
_requested = {"n": None, "env_read": False}
_applied = {}        # pool name -> thread count last applied to it
_blas_limiter = []   # the live threadpoolctl limiter (kept so its limit holds)


# The most threads any pool may be asked for. Above the hardware threads of the
# largest CPUs fastrnn runs on (two 192-core sockets with SMT are 768), so no real
# setting is refused, and far below the counts at which OpenMP fails to create its
# team and crashes the process (100,000 threads segfault inside libgomp).
MAX_THREADS = 1024
THREAD_COUNT = f"an integer number of threads >= 1 and <= {MAX_THREADS}"   # what the check accepts


def check_num_threads(n: int, source: str) -> int:
    """``n`` as an int if it is a valid thread count (an integer in [1, MAX_THREADS]).

    Raises TypeError (not an integer; bool refused) or ValueError (out of range)
    with a message that starts with ``source``, the name of where ``n`` came from
    (``"set_num_threads: n"``, ``"--threads"``).
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{source} must be {THREAD_COUNT}, got {type(n).__name__} {n!r}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{source} must be {THREAD_COUNT}, got {n}"
                         + (" (the limit is fastrnn.threads.MAX_THREADS)" if n > 1 else ""))
    return int(n)


def _wanted():
    """The requested thread count (knob, else environment), or None for library defaults."""
    if _requested["n"] is None and not _requested["env_read"]:
        _requested["n"] = config.get(ENV)
        _requested["env_read"] = True
    return _requested["n"]


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (int, 1 to ``MAX_THREADS``) in the Numba, OpenMP and BLAS pools
    from now on."""
    n = check_num_threads(n, "set_num_threads: n")
    with _lock:
        _requested["n"] = n
        _requested["env_read"] = True  # an explicit call overrides the environment
    apply_to_loaded_backends()


def get_num_threads() -> int:
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
