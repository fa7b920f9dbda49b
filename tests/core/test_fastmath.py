"""The one float32 exp/tanh approximation (fastrnn.backends.fastmath) in every compiled build.

One accuracy test against float64 NumPy over a dense grid plus the extremes
(0, denormals, overflow and underflow edges, +-inf, NaN), for the NumPy spelling
of the algorithm, the Numba kernels and both Cython builds; and the check that
the .pyx's constants are the Python table.
"""
import importlib

import numpy as np
import pytest

import fastrnn
from fastrnn.backends import fastmath

F32 = np.finfo(np.float32)


def _inputs():
    grid = np.linspace(-110.0, 95.0, 400_001, dtype=np.float32)
    near_zero = np.linspace(-1.0, 1.0, 100_001, dtype=np.float32)
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-40, -1e-40, F32.tiny, -F32.tiny,
                        fastmath.TANH_CUT, -fastmath.TANH_CUT, np.nextafter(np.float32(0.625), 0),
                        88.72, 88.73, 89.0, 1e4, -87.33, -87.34, -103.0, -103.3, -104.0, -1e4,
                        F32.max, -F32.max, np.inf, -np.inf, np.nan], dtype=np.float32)
    return np.concatenate([grid, near_zero, special])


def _builds():
    """name -> (exp_into(x, out), tanh_into(x, out)) over 1-D float32 arrays."""
    def numpy_spelling(fn):
        def run(x, out):
            out[:] = fn(x)
        return run
    builds = {"fastmath (NumPy)": (numpy_spelling(fastmath.exp_float32),
                                   numpy_spelling(fastmath.tanh_float32))}
    available = fastrnn.available_backends()
    if "numba" in available:
        from fastrnn.backends import _numba_kernels as nk
        builds["numba"] = (nk.exp_into, nk.tanh_into)
    if "cython" in available:
        for name in ("_cython_kernels", "_cython_kernels_avx2"):
            try:
                k = importlib.import_module(f"fastrnn.backends.{name}")
            except ImportError:
                continue
            if name.endswith("avx2") and not k.cpu_has_avx2_fma():
                continue
            builds[name] = (k.exp_into, k.tanh_flat_into)
    return builds


BUILDS = _builds()


def _ulp_error(got, ref):
    """|got - ref| in units of the float32 spacing at ref (float64 arithmetic)."""
    spacing = np.spacing(np.abs(ref.astype(np.float32))).astype(np.float64)
    return np.abs(got.astype(np.float64) - ref) / spacing


@pytest.mark.parametrize("build", list(BUILDS))
def test_float32_exp_and_tanh_are_within_the_stated_ulp_bound(build):
    exp_into, tanh_into = BUILDS[build]
    x = _inputs()
    e, t = np.empty_like(x), np.empty_like(x)
    exp_into(x, e)
    tanh_into(x, t)
    with np.errstate(over="ignore", invalid="ignore"):
        ref_e, ref_t = np.exp(x.astype(np.float64)), np.tanh(x.astype(np.float64))
    finite = np.isfinite(x)

    normal = finite & (ref_e >= F32.tiny) & (ref_e <= F32.max)
    assert _ulp_error(e[normal], ref_e[normal]).max() <= fastmath.EXP_MAX_ULP
    tiny = finite & (ref_e < F32.tiny)         # denormal or zero results
    assert np.abs(e[tiny] - ref_e[tiny]).max() < F32.tiny
    assert np.all(np.isposinf(e[finite & (ref_e > F32.max)]))
    assert np.isposinf(e[x == np.inf]).all() and (e[x == -np.inf] == 0).all()
    assert np.isnan(e[np.isnan(x)]).all()

    assert _ulp_error(t[finite], ref_t[finite]).max() <= fastmath.TANH_MAX_ULP
    assert (t[x == np.inf] == 1).all() and (t[x == -np.inf] == -1).all()
    assert np.isnan(t[np.isnan(x)]).all()
    assert np.array_equal(t[np.abs(x) < 1e-30], x[np.abs(x) < 1e-30])   # denormals, +-0 kept


@pytest.mark.skipif("cython" not in fastrnn.available_backends(),
                    reason="the Cython extension is not built")
def test_cython_kernels_mirror_the_fastmath_table():
    from fastrnn.backends import _cython_kernels
    mirrored = _cython_kernels.FASTMATH_CONSTANTS
    assert set(mirrored) == set(fastmath.CONSTANTS)
    for name, value in fastmath.CONSTANTS.items():
        # The .pyx holds float32 constants (the bias is an int).
        want = np.asarray(value, dtype=np.int64 if name == "ROUND_BIAS" else np.float32)
        assert np.array_equal(np.asarray(mirrored[name], dtype=want.dtype), want), name
