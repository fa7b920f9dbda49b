"""GEMM providers (fastrnn.gemm) against NumPy's float64 product."""
import importlib.util

import numpy as np
import pytest

from fastrnn import gemm
from fastrnn.gemm import AUTO_MIN_FLOP, GEMM_PROVIDERS, gemm_provider

HAVE_TORCH = importlib.util.find_spec("torch") is not None
PROVIDERS = ["auto", "numpy"] + (["torch", "onednn"] if HAVE_TORCH else [])
# (m, k, n): odd sizes, single rows/columns, and one above AUTO_MIN_FLOP so 'auto'
# really takes its fast route.
SHAPES = [(1, 1, 1), (1, 7, 5), (13, 1, 9), (17, 33, 65), (3, 130, 1), (257, 259, 513)]


def _operands(rng, m, k, n, dtype, layout):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout == "fortran":
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "strided":    # every other row and column of bigger arrays
        big_a = rng.standard_normal((2 * m, 2 * k)).astype(dtype)
        big_b = rng.standard_normal((2 * k, 2 * n)).astype(dtype)
        big_a[::2, ::2], big_b[::2, ::2] = a, b
        a, b = big_a[::2, ::2], big_b[::2, ::2]
    return a, b


def _tol(dtype, k):
    return 1e-12 * k if dtype == np.float64 else 2e-6 * k


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "fortran", "strided"])
@pytest.mark.parametrize("shape", SHAPES)
def test_products_equal_numpy(name, dtype, layout, shape):
    rng = np.random.default_rng(sum(shape))
    m, k, n = shape
    a, b = _operands(rng, m, k, n, dtype, layout)
    want = a.astype(np.float64) @ b.astype(np.float64)
    scale = max(1.0, np.abs(want).max())
    provider = gemm_provider(name)

    got = provider.mm(a, b)
    assert got.shape == (m, n) and got.dtype == dtype
    assert np.abs(got - want).max() <= _tol(dtype, k) * scale

    out = np.full((m, n), np.nan, dtype=dtype)
    assert provider.mm(a, b, out=out) is out
    assert np.abs(out - want).max() <= _tol(dtype, k) * scale

    scratch = np.full((m, n), np.nan, dtype=dtype)
    product = provider.product(a, b, scratch)
    assert product.shape == (m, n) and product.dtype == dtype
    assert np.abs(product - want).max() <= _tol(dtype, k) * scale

    acc = rng.standard_normal((m, n)).astype(dtype)
    expected = acc.astype(np.float64) + want
    provider.mm_add(a, b, acc, np.empty_like(acc))
    assert np.abs(acc - expected).max() <= _tol(dtype, k) * scale


@pytest.mark.parametrize("name", PROVIDERS)
def test_empty_products(name):
    a, b = np.ones((0, 4), np.float32), np.ones((4, 3), np.float32)
    assert gemm_provider(name).mm(a, b).shape == (0, 3)
    acc = np.ones((2, 3), np.float32)
    gemm_provider(name).mm_add(np.ones((2, 0), np.float32), np.ones((0, 3), np.float32),
                               acc, np.empty_like(acc))
    np.testing.assert_array_equal(acc, 1)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs PyTorch")
def test_auto_routes_big_products_to_its_fast_provider(monkeypatch):
    auto = gemm.AutoGemm(gemm.OneDnnGemm())
    assert auto.uses == "onednn"
    calls = []
    monkeypatch.setattr(auto.fast, "mm", lambda a, b, out=None: calls.append(a.shape) or out)
    side = int(np.ceil(AUTO_MIN_FLOP ** (1 / 3)))
    auto.mm(np.ones((side, side), np.float32), np.ones((side, side), np.float32))
    auto.mm(np.ones((4, 4), np.float32), np.ones((4, 4), np.float32))           # small
    assert calls == [(side, side)]
    # float64 is oneDNN's to refuse: it hands it to NumPy (exact to float64 rounding).
    a = np.random.default_rng(0).standard_normal((side, side))
    assert np.abs(gemm_provider("onednn").mm(a, a) - a @ a).max() < 1e-12 * side


def test_unknown_provider_is_named():
    with pytest.raises(ValueError, match=r"gemm must be one of \('auto'"):
        gemm_provider("mkl")
    assert set(GEMM_PROVIDERS) >= {"auto", "numpy"}


def test_default_provider_follows_setter_and_environment(monkeypatch):
    monkeypatch.delenv(gemm.ENV, raising=False)
    assert gemm.default_provider() == "auto"
    monkeypatch.setenv(gemm.ENV, "numpy")
    assert gemm.default_provider() == "numpy"
    calls = []
    monkeypatch.setattr(gemm.NumpyGemm, "mm", lambda self, a, b, out=None: calls.append(1))
    gemm.mm(np.ones((2, 2)), np.ones((2, 2)))
    assert calls == [1]
    try:
        gemm.set_default_provider("auto")          # the setter wins over the environment
        assert gemm.default_provider() == "auto"
        with pytest.raises(ValueError, match="gemm must be one of"):
            gemm.set_default_provider("blis")
        assert gemm.default_provider() == "auto"   # a refused name changes nothing
    finally:
        gemm.set_default_provider(None)
    monkeypatch.setenv(gemm.ENV, "fast")
    with pytest.raises(ValueError, match="FASTRNN_GEMM='fast' must be one of"):
        gemm.default_provider()


@pytest.mark.parametrize("cores, avx512, narrow", [
    (["haswell"], True, True),        # a Haswell pin on an AVX-512 CPU: oneDNN
    (["skylakex"], True, False),      # OpenBLAS's own AVX-512 kernels: NumPy
    (["haswell"], False, False),      # a CPU without AVX-512: NumPy
    ([], True, False),                # NumPy's BLAS is not OpenBLAS (MKL, Accelerate): NumPy
])
def test_auto_chooses_onednn_only_for_narrow_openblas(monkeypatch, cores, avx512, narrow):
    monkeypatch.setattr(gemm, "_openblas_cores", lambda: cores)
    monkeypatch.setattr(gemm, "_cpu_has_avx512", lambda: avx512)
    assert gemm.numpy_blas_is_narrow() is narrow
    gemm.clear_cache()
    try:
        expected = "onednn" if narrow and HAVE_TORCH else "numpy"
        assert gemm_provider("auto").uses == expected
    finally:
        gemm.clear_cache()


def test_openblas_cores_are_read_from_this_process():
    cores = gemm._openblas_cores()
    assert all(isinstance(c, str) for c in cores)
    info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if "openblas" in str(info.get("name", "")).lower():
        assert cores, "numpy links OpenBLAS, but threadpoolctl did not report it"


def test_use_provider_sets_the_default_for_a_block_only(monkeypatch):
    monkeypatch.delenv(gemm.ENV, raising=False)
    with gemm.use_provider("numpy"):
        assert gemm.default_provider() == "numpy"
        assert gemm.describe() == "numpy (large products via numpy)"
        with gemm.use_provider(None):               # None leaves it as it is
            assert gemm.default_provider() == "numpy"
    assert gemm.default_provider() == "auto"
    with pytest.raises(ValueError, match="gemm must be one of"):
        with gemm.use_provider("blis"):
            pass
    assert gemm.default_provider() == "auto"


def test_use_provider_is_per_thread(monkeypatch):
    """A block in one thread does not change the provider that other threads use."""
    import threading
    monkeypatch.delenv(gemm.ENV, raising=False)
    inside, seen = threading.Event(), []

    def other():
        inside.wait(10)
        seen.append(gemm.default_provider())

    t = threading.Thread(target=other)
    t.start()
    with gemm.use_provider("numpy"):
        inside.set()
        t.join()
        assert gemm.default_provider() == "numpy"
    assert seen == ["auto"]
