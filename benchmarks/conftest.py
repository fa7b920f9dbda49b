"""Options and parametrisation of the layer benchmarks.

    pytest benchmarks/ --benchmark-only                       # every size (full takes a while)
    pytest benchmarks/ --benchmark-only --bench-sizes tiny,medium
    pytest benchmarks/ --benchmark-disable -q --bench-sizes tiny   # CI smoke run

``--bench-sizes`` (or ``$FASTRNN_BENCH_SIZES``) picks sizes from tiny, medium,
full; ``--bench-impls`` (or ``$FASTRNN_BENCH_IMPLS``) picks implementations from
numpy, numba, cython, torch (default: every one this install can run).
"""
import importlib.util

import pytest

import fastrnn
from fastrnn import config as fastrnn_config

SIZES = ("tiny", "medium", "full")
IMPLS = ("numpy", "numba", "cython", "torch")


def pytest_addoption(parser):
    group = parser.getgroup("fastrnn benchmarks")
    group.addoption("--bench-sizes",
                    default=fastrnn_config.get(fastrnn_config.BENCH_SIZES) or ",".join(SIZES),
                    help="comma-separated sizes to run, from tiny, medium, full "
                         "(default: $FASTRNN_BENCH_SIZES or all three)")
    group.addoption("--bench-impls", default=fastrnn_config.get(fastrnn_config.BENCH_IMPLS) or "",
                    help="comma-separated implementations to compare, from numpy, numba, cython, "
                         "torch (default: $FASTRNN_BENCH_IMPLS or every available one)")


def _choice(config, option, allowed):
    raw = config.getoption(option)
    picked = [item.strip() for item in raw.split(",") if item.strip()]
    unknown = [item for item in picked if item not in allowed]
    if unknown:
        raise pytest.UsageError(f"{option}: unknown {unknown}; choose from {list(allowed)}")
    return picked


def available_impls():
    """Backends this install can run, plus PyTorch when it is installed."""
    impls = [name for name in IMPLS[:3] if name in fastrnn.available_backends()]
    if importlib.util.find_spec("torch") is not None:
        impls.append("torch")
    return impls


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", _choice(config, "--bench-sizes", SIZES))
    if "impl" in metafunc.fixturenames:
        wanted = _choice(config, "--bench-impls", IMPLS) or available_impls()
        metafunc.parametrize("impl", [impl for impl in wanted if impl in available_impls()])
