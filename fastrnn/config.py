"""Every ``FASTRNN_*`` environment variable fastrnn reads, declared in one place.

That includes two kinds read outside the package: ``FASTRNN_NO_EXTENSIONS``, read
by setup.py, which runs before the package can be imported and so reads
``os.environ`` itself (tests/core/test_config.py checks that it reads this name), and
the layer benchmarks' ``FASTRNN_BENCH_*``, which benchmarks/conftest.py reads
through ``get``.

``VARIABLES`` maps each name to a ``Variable``: what it sets, its default and how
its value is parsed. ``get(name)`` reads one from ``os.environ`` when called (so a
change of the environment counts from the next read), parses it, and returns the
variable's default when it is unset or blank. A value that does not parse raises
ValueError naming the variable, the value and what was expected::

    FASTRNN_GEMM='fast' must be one of ('auto', 'numpy', 'torch', 'onednn')

The lists of valid names stay with the modules that own them (``fastrnn.gemm``,
``fastrnn.precision``, ``fastrnn.backends``, ``fastrnn.threads``), imported when a
value is checked, so importing this module costs nothing. ``fastrnn.threads``
reads its variable once, on first use; every other reader calls ``get`` each time.

docs/configuration.md holds ``markdown_table()`` (tests/core/test_config.py checks it).
"""
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BACKEND = "FASTRNN_BACKEND"
NUM_THREADS = "FASTRNN_NUM_THREADS"
PRECISION = "FASTRNN_PRECISION"
GEMM = "FASTRNN_GEMM"
BF16_GEMM = "FASTRNN_BF16_GEMM"
DATA = "FASTRNN_DATA"
CACHE = "FASTRNN_CACHE"
COLA = "FASTRNN_COLA"
DIST_TIMEOUT = "FASTRNN_DIST_TIMEOUT"
NO_EXTENSIONS = "FASTRNN_NO_EXTENSIONS"
BENCH_SIZES = "FASTRNN_BENCH_SIZES"
BENCH_IMPLS = "FASTRNN_BENCH_IMPLS"


@dataclass(frozen=True)
class Variable:
    """One environment variable.

    - name: ``FASTRNN_...``;
    - help: what it sets, one line (the docs table's "meaning");
    - parse: a set value -> what it means; raises ValueError whose message says what
      was expected (``"one of ('fp32', 'bf16')"``), which ``get`` completes;
    - default: what ``get`` returns when the variable is unset or blank;
    - default_help: the default in words, when it is not a fixed value (``default`` None:
      the reader works it out).
    """
    name: str
    help: str
    parse: Callable[[str], Any]
    default: Any = None
    default_help: str = ""

    def describe_default(self) -> str:
        return self.default_help or f"`{self.default}`"


# ------------------------------------------------------------ parsers

def _one_of(raw, choices):
    name = raw.strip()
    if name not in choices:
        raise ValueError(f"one of {choices}")
    return name


def _backend(raw):
    from fastrnn.backends import BACKENDS, available_backends
    name = raw.strip()
    if name not in BACKENDS:
        raise ValueError(f"a fastrnn backend name; available backends: {available_backends()}")
    return name


def _precision(raw):
    from fastrnn.precision import PRECISIONS
    return _one_of(raw, PRECISIONS)


def _gemm_provider(raw):
    from fastrnn.gemm import GEMM_PROVIDERS
    return _one_of(raw, GEMM_PROVIDERS)


def _bf16_provider(raw):
    from fastrnn.gemm import BF16_PROVIDERS
    return _one_of(raw, BF16_PROVIDERS)


def _thread_count(raw):
    from fastrnn import threads  # owns the limit and the one check of a count
    try:
        return threads.check_num_threads(int(raw), NUM_THREADS)
    except ValueError:
        raise ValueError(threads.THREAD_COUNT) from None


def _seconds(raw):
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError("a number of seconds > 0")
    return seconds


def _folder(raw):
    return raw      # checked by the reader, which knows what the folder must hold


def _switch(raw):
    return raw.strip() != "0"     # setup.py's rule: set and not 0 means on


def _name_list(raw):
    return raw.strip()   # comma-separated; checked by the reader, which owns the choices


# ------------------------------------------------------------ the registry

VARIABLES = {v.name: v for v in (
    Variable(BACKEND, "compute backend of the layer functions and the fused engine "
             "(`fastrnn.set_backend`)", _backend,
             default_help="the fastest available backend"),
    Variable(NUM_THREADS, "threads of the Numba, OpenMP, BLAS and PyTorch pools "
             "(`fastrnn.set_num_threads`); read once, on first use", _thread_count,
             default_help="each library's default (one thread per core)"),
    Variable(PRECISION, "arithmetic precision of the fused training path, `fp32` or `bf16` "
             "(`fastrnn.set_precision`)", _precision, default="fp32"),
    Variable(GEMM, "float32 GEMM provider of the fast paths (`fastrnn.gemm`)", _gemm_provider,
             default="auto"),
    Variable(BF16_GEMM, "GEMM provider of the products under precision `bf16` "
             "(`fastrnn.gemm.bf16_provider`)", _bf16_provider, default="auto"),
    Variable(DATA, "COCO captioning folder of `fastrnn-train`, `fastrnn-eval` and "
             "`load_coco_data()`", _folder,
             default_help="the built-in synthetic set (the command lines); "
                          "`load_coco_data()` needs a folder"),
    Variable(CACHE, "folder where the built-in synthetic COCO sets are generated and kept",
             _folder, default_help="`$XDG_CACHE_HOME/fastrnn`, else `~/.cache/fastrnn`"),
    Variable(COLA, "CoLA folder (`train.tsv`, `dev.tsv`) of `fastrnn-cola` and `load_cola()`",
             _folder, default_help="none: pass `--data DIR`"),
    Variable(DIST_TIMEOUT, "seconds data-parallel ranks wait for each other before failing",
             _seconds, default=300.0),
    Variable(NO_EXTENSIONS, "set (and not `0`) when installing: build without the compiled "
             "Cython/OpenMP kernels, so no `cython` backend (read by `setup.py`)", _switch,
             default=False, default_help="unset: the kernels are built, and a failed build "
                                         "stops the install"),
    Variable(BENCH_SIZES, "sizes the layer benchmarks (`pytest benchmarks/`) run, from `tiny`, "
             "`medium`, `full`, comma-separated; `--bench-sizes` wins", _name_list,
             default_help="all three"),
    Variable(BENCH_IMPLS, "implementations the layer benchmarks compare, from `numpy`, `numba`, "
             "`cython`, `torch`, comma-separated; `--bench-impls` wins", _name_list,
             default_help="every one this install can run"),
)}


def get(name: str) -> Any:
    """The parsed value of environment variable ``name`` (a key of ``VARIABLES``), read now;
    its default when unset or blank."""
    variable = VARIABLES[name]
    raw = os.environ.get(name, "")
    if not raw.strip():
        return variable.default
    try:
        return variable.parse(raw)
    except ValueError as err:
        raise ValueError(f"{name}={raw!r} must be {err}") from None


def markdown_table() -> str:
    """The table of docs/configuration.md: every variable, its meaning and its default."""
    rows = ["| Variable | Sets | Default |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {v.help} | {v.describe_default()} |" for v in VARIABLES.values()]
    return "\n".join(rows)
