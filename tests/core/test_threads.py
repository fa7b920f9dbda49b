"""The threads knob: fastrnn.set_num_threads / get_num_threads and FASTRNN_NUM_THREADS.

In-process tests restore the default (one thread per core) when they finish;
environment-variable behaviour runs in subprocesses so it starts from scratch.
"""
import os
import subprocess
import sys
import types

import pytest

import fastrnn
from fastrnn import threads


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.fixture
def restore_threads():
    yield
    fastrnn.set_num_threads(cores())


def blas_threads():
    from threadpoolctl import threadpool_info
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


@pytest.mark.parametrize("bad, error, words", [
    (0, ValueError, "got 0"),
    (-2, ValueError, "got -2"),
    (2.5, TypeError, "got float 2.5"),
    ("2", TypeError, "got str '2'"),
    (True, TypeError, "got bool True"),
    (None, TypeError, "got NoneType None"),
    (threads.MAX_THREADS + 1, ValueError, f"got {threads.MAX_THREADS + 1}"),
    (100000, ValueError, "got 100000 (the limit is fastrnn.threads.MAX_THREADS)"),
    (2**40, ValueError, f"got {2**40}"),
])
def test_set_num_threads_rejects_bad_counts(bad, error, words):
    with pytest.raises(error, match="set_num_threads: n must be an integer number of threads >= 1"
                                    ) as info:
        fastrnn.set_num_threads(bad)
    assert words in str(info.value)


def test_set_num_threads_reaches_numba_and_blas(restore_threads):
    pytest.importorskip("numba")
    import numba

    import fastrnn.backends.numba_backend  # noqa: F401  (loads numba as selecting it would)
    fastrnn.set_num_threads(1)
    assert fastrnn.get_num_threads() == 1
    assert numba.get_num_threads() == 1
    assert blas_threads() == {1}
    fastrnn.set_num_threads(cores())
    assert numba.get_num_threads() == min(cores(), numba.config.NUMBA_NUM_THREADS)
    assert blas_threads() == {cores()}


def test_openmp_extension_gets_the_count_when_loaded(monkeypatch, restore_threads):
    calls = []
    fake = types.ModuleType("fastrnn.backends._cython_kernels")
    fake.set_num_threads = calls.append
    monkeypatch.setitem(sys.modules, "fastrnn.backends._cython_kernels", fake)
    monkeypatch.setattr(threads, "_applied", {})  # forget what the real extension was given
    fastrnn.set_num_threads(1)
    assert calls == [1]
    fastrnn.set_num_threads(1)  # unchanged: not applied again
    assert calls == [1]


def run_python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != threads.ENV}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True,
                          text=True)


def test_environment_variable_is_applied_when_a_backend_loads():
    pytest.importorskip("numba")
    code = ("import fastrnn, fastrnn.backends.numba_backend, numba\n"
            "from threadpoolctl import threadpool_info\n"
            "blas = {p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}\n"
            "print(fastrnn.get_num_threads(), numba.get_num_threads(), sorted(blas))")
    proc = run_python(code, FASTRNN_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1", "[1]"]


def test_explicit_call_overrides_the_environment():
    code = "import fastrnn; fastrnn.set_num_threads(1); print(fastrnn.get_num_threads())"
    proc = run_python(code, FASTRNN_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


def test_default_is_one_thread_per_core():
    proc = run_python("import fastrnn; print(fastrnn.get_num_threads())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(cores())


@pytest.mark.parametrize("value", ["zero", "0", "1.5", "100000", str(2**40)])
def test_bad_environment_variable_fails_clearly(value):
    proc = run_python("import fastrnn; fastrnn.get_num_threads()", FASTRNN_NUM_THREADS=value)
    assert proc.returncode != 0
    assert f"FASTRNN_NUM_THREADS={value!r} must be an integer number of threads >= 1" in proc.stderr


def test_import_stays_light():
    code = ("import sys, fastrnn; "
            "print(sorted(m for m in ('numba', 'threadpoolctl', 'torch') if m in sys.modules))")
    proc = run_python(code, FASTRNN_NUM_THREADS="1")
    assert proc.stdout.strip() == "[]"


def test_check_num_threads_names_its_source():
    assert threads.check_num_threads(3, "--threads") == 3
    assert type(threads.check_num_threads(__import__("numpy").int64(2), "--threads")) is int
    assert threads.check_num_threads(threads.MAX_THREADS, "--threads") == threads.MAX_THREADS
    with pytest.raises(ValueError, match=r"^--threads must be an integer number of threads >= 1 "
                                         r"and <= 1024, got 100000"):
        threads.check_num_threads(100000, "--threads")
    with pytest.raises(TypeError, match="^--threads must be .*, got str '4'"):
        threads.check_num_threads("4", "--threads")


@pytest.mark.parametrize("setup", [
    "fastrnn.set_num_threads(100000)",
    "fastrnn.set_num_threads(2**40)",
    "from fastrnn.backends import cython_backend; cython_backend.set_num_threads(100000)",
    "from fastrnn.backends import cython_backend; cython_backend.set_num_threads(2**40)",
])
def test_huge_thread_count_is_refused_before_any_kernel_runs(setup):
    """Then an OpenMP kernel big enough to start a team still runs (it used to segfault)."""
    if "cython" not in fastrnn.available_backends():
        pytest.skip("the Cython extension is not built")
    code = ("import numpy as np, fastrnn\n"
            "from fastrnn import layers\n"
            "try:\n"
            f"    {setup}\n"
            "except ValueError as err:\n"
            "    print('refused:', err)\n"
            "with fastrnn.use_backend('cython'):\n"
            "    x = np.ones((600, 1, 1000), dtype=np.float32)\n"
            "    y = np.zeros((600, 1), dtype=int)\n"
            "    loss, _ = layers.temporal_softmax_loss(x, y, np.ones((600, 1), bool))\n"
            "print('ran', round(float(loss), 3))")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "<= 1024" in proc.stdout
    assert "ran 6.908" in proc.stdout   # log(1000): uniform scores over 1000 words


def test_huge_environment_thread_count_fails_clearly_not_in_a_kernel():
    proc = run_python("import fastrnn; fastrnn.set_backend(fastrnn.available_backends()[0])",
                      FASTRNN_NUM_THREADS="100000")
    assert proc.returncode == 1
    assert "FASTRNN_NUM_THREADS='100000' must be an integer number of threads >= 1 and <= 1024" \
        in proc.stderr
