"""The Cython/OpenMP extension: built into the installed package, OpenMP live,
and a clear message (not a crash at ``import fastrnn``) when it is missing."""
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest

import fastrnn
from fastrnn import backends

EXT = "fastrnn.backends._cython_kernels"


def _have_c_compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(os.environ.get("CC", cc)) is not None


needs_extension = pytest.mark.skipif(
    importlib.util.find_spec(EXT) is None and not _have_c_compiler(),
    reason="no C compiler on this machine, so the extension cannot have been built")


@needs_extension
def test_extension_is_installed_and_listed():
    assert importlib.util.find_spec(EXT) is not None, (
        "a C compiler is available but the extension is missing: "
        "rebuild with `pip install --force-reinstall --no-deps .`")
    assert "cython" in fastrnn.available_backends()


@needs_extension
def test_extension_was_built_with_openmp():
    kernels = importlib.import_module(EXT)
    before = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        assert kernels.get_num_threads() == 1
        kernels.set_num_threads(3)
        assert kernels.get_num_threads() == 3   # omp_get_max_threads follows omp_set_num_threads
    finally:
        kernels.set_num_threads(before)
    with pytest.raises(ValueError, match="number of threads >= 1 and <= 1024, got 0"):
        kernels.set_num_threads(0)
    with pytest.raises(ValueError, match="got 100000"):   # a team that large crashes libgomp
        kernels.set_num_threads(100000)


@needs_extension
def test_the_avx2_build_is_used_when_the_cpu_has_it():
    from fastrnn.backends import cython_backend
    kernels = importlib.import_module(EXT)
    x86 = sysconfig.get_platform().endswith(("x86_64", "amd64"))
    if kernels.cpu_has_avx2_fma() and x86:
        assert cython_backend.KERNELS_BUILD == "_cython_kernels_avx2"
    else:
        assert cython_backend.KERNELS_BUILD == "_cython_kernels"


@needs_extension
def test_kernel_entry_points_reject_bad_buffers():
    """The extension checks what it is handed, so a wrong internal call raises, never reads
    out of bounds."""
    kernels = importlib.import_module(EXT)
    N, H = 2, 3
    a = np.zeros((N, 4 * H))
    good = np.zeros((N, H))
    with pytest.raises(ValueError, match="next_h"):
        kernels.lstm_cell_forward(a, None, None, good, good.copy(), np.zeros((N, H + 1)))
    with pytest.raises(ValueError, match="next_c"):
        kernels.lstm_cell_forward(a, None, None, good, np.zeros((N, H), np.float32), good.copy())
    with pytest.raises(ValueError, match="y must lie"):
        kernels.softmax_xent_rows(np.zeros((2, 4)), np.array([0, 4], dtype=np.intp), None,
                                  np.zeros((2, 4)), np.zeros(2), 1.0)


def test_missing_extension_is_not_listed_and_explains_how_to_rebuild(monkeypatch):
    registry = dict(backends._REGISTRY)
    registry["cython"] = ("fastrnn.backends.cython_backend", ("fastrnn.backends._no_such_extension",))
    monkeypatch.setattr(backends, "_REGISTRY", registry)
    monkeypatch.setattr(backends, "_loaded", {})
    assert "cython" not in fastrnn.available_backends()
    with pytest.raises(ImportError, match=r"not available.*pip install --force-reinstall"):
        backends.load_backend("cython")


BROKEN_EXTENSION = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys, warnings

    class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        # Finds the extension (so it is listed) but fails to import it, like a stale .so.
        def find_spec(self, name, path=None, target=None):
            if name.startswith("fastrnn.backends._cython_kernels"):
                return importlib.machinery.ModuleSpec(name, self)
        def create_module(self, spec):
            raise ImportError("undefined symbol: GOMP_parallel (simulated)")
        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Broken())
    import fastrnn
    from fastrnn import backends
    print("listed", "cython" in fastrnn.available_backends())
    try:
        backends.load_backend("cython")
    except ImportError as err:
        print("error", err)
    # The default skips the broken backend with a warning and falls back.
    backends._REGISTRY = {k: v for k, v in backends._REGISTRY.items() if k in ("cython", "numpy")}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        print("default", fastrnn.get_backend())
    print("warned", any("skipping fastrnn backend 'cython'" in str(w.message) for w in caught))
""")


def test_broken_extension_keeps_import_working_and_falls_back():
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_BACKEND"}
    proc = subprocess.run([sys.executable, "-c", BROKEN_EXTENSION], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "listed True" in out
    assert "error fastrnn backend 'cython' failed to import" in out
    assert "GOMP_parallel (simulated)" in out and "pip install --force-reinstall" in out
    assert "default numpy" in out and "warned True" in out
