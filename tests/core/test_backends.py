"""Backend selection: registry, defaults, context manager and environment variable."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import layers


def test_numpy_is_always_available():
    assert "numpy" in fastrnn.available_backends()


def test_default_is_the_first_available():
    code = "import fastrnn; print(fastrnn.get_backend(), fastrnn.available_backends()[0])"
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == out[1]


def test_environment_variable_selects_backend():
    code = "import fastrnn; print(fastrnn.get_backend())"
    env = dict(os.environ, FASTRNN_BACKEND="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "numpy"


def test_environment_variable_with_unknown_name_fails_clearly():
    code = "import fastrnn; fastrnn.get_backend()"
    env = dict(os.environ, FASTRNN_BACKEND="cuda")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "FASTRNN_BACKEND='cuda'" in proc.stderr and "'numpy'" in proc.stderr


def test_unknown_backend_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown fastrnn backend 'gpu'.*\['.*numpy'\]"):
        fastrnn.set_backend("gpu")


def test_use_backend_restores_the_previous_choice():
    before = fastrnn.get_backend()
    with fastrnn.use_backend("numpy") as be:
        assert fastrnn.get_backend() == "numpy" and be.name == "numpy"
    assert fastrnn.get_backend() == before


def test_set_backend_changes_the_global_choice():
    before = fastrnn.get_backend()
    try:
        fastrnn.set_backend("numpy")
        assert fastrnn.get_backend() == "numpy"
    finally:
        fastrnn.set_backend(before)


@pytest.mark.parametrize("other", fastrnn.available_backends())
def test_backward_runs_on_the_backend_that_made_the_cache(other):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4)), rng.standard_normal(4)
    with fastrnn.use_backend("numpy"):
        _, cache = layers.affine_forward(x, w, b)
    assert cache.backend == "numpy"
    with fastrnn.use_backend(other):
        dx, dw, db = layers.affine_backward(np.ones((2, 4)), cache)
    np.testing.assert_allclose(dx, np.ones((2, 4)) @ w.T)


def test_import_does_not_load_heavy_modules():
    code = ("import sys, fastrnn; "
            "print(sorted(m for m in ('numba', 'torch', 'h5py', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
