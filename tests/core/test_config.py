"""fastrnn.config: the registry of FASTRNN_* variables, their parsing, and its docs page."""
import re
from pathlib import Path

import pytest

import fastrnn
from fastrnn import config

ROOT = Path(__file__).resolve().parents[2]
DOCS_PAGE = ROOT / "docs" / "configuration.md"

# name -> (a valid value, what it parses to, an invalid value or None, the expectation named)
CASES = {
    config.BACKEND: ("numpy", "numpy", "cuda", "a fastrnn backend name; available backends: "),
    config.NUM_THREADS: (" 3 ", 3, "1.5", "an integer number of threads >= 1 and <= 1024"),
    config.PRECISION: ("bf16", "bf16", "fp16", "one of ('fp32', 'bf16')"),
    config.GEMM: ("numpy", "numpy", "fast", "one of ('auto', 'numpy', 'torch', 'onednn')"),
    config.BF16_GEMM: ("emulated", "emulated", "amx", "one of ('auto', 'emulated', 'onednn', "
                                                     "'mkl', 'torch')"),
    config.DATA: ("/data/coco", "/data/coco", None, None),
    config.CACHE: ("/tmp/fastrnn cache", "/tmp/fastrnn cache", None, None),
    config.COLA: ("~/CoLA", "~/CoLA", None, None),
    config.DIST_TIMEOUT: ("30", 30.0, "soon", "a number of seconds > 0"),
    config.NO_EXTENSIONS: ("1", True, None, None),
    config.BENCH_SIZES: (" tiny,medium ", "tiny,medium", None, None),
    config.BENCH_IMPLS: ("numpy,cython", "numpy,cython", None, None),
}


def test_every_variable_has_a_test_case():
    assert set(CASES) == set(config.VARIABLES)


def test_every_name_is_a_fastrnn_variable():
    for name, variable in config.VARIABLES.items():
        assert name == variable.name and re.fullmatch(r"FASTRNN_[A-Z0-9_]+", name)
        assert variable.help and variable.describe_default()


@pytest.mark.parametrize("name", sorted(CASES))
def test_unset_or_blank_gives_the_default(monkeypatch, name):
    monkeypatch.delenv(name, raising=False)
    assert config.get(name) == config.VARIABLES[name].default
    monkeypatch.setenv(name, "  ")
    assert config.get(name) == config.VARIABLES[name].default


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_valid_value_is_parsed(monkeypatch, name):
    raw, parsed, _, _ = CASES[name]
    monkeypatch.setenv(name, raw)
    assert config.get(name) == parsed


@pytest.mark.parametrize("name", sorted(n for n, case in CASES.items() if case[2] is not None))
def test_a_bad_value_names_the_variable_the_value_and_what_was_expected(monkeypatch, name):
    _, _, bad, expected = CASES[name]
    monkeypatch.setenv(name, bad)
    with pytest.raises(ValueError) as err:
        config.get(name)
    assert str(err.value).startswith(f"{name}={bad!r} must be {expected}")


@pytest.mark.parametrize("name, bad", [
    (config.NUM_THREADS, "0"), (config.NUM_THREADS, "100000"), (config.NUM_THREADS, "two"),
    (config.DIST_TIMEOUT, "0"), (config.DIST_TIMEOUT, "-5"), (config.DIST_TIMEOUT, "inf"),
    (config.DIST_TIMEOUT, "nan"), (config.PRECISION, "BF16"),
])
def test_out_of_range_values_are_refused(monkeypatch, name, bad):
    monkeypatch.setenv(name, bad)
    with pytest.raises(ValueError, match=f"^{name}={bad!r} must be "):
        config.get(name)


def test_values_are_read_when_asked_not_at_import(monkeypatch):
    monkeypatch.setenv(config.GEMM, "numpy")
    assert config.get(config.GEMM) == "numpy"
    monkeypatch.setenv(config.GEMM, "torch")
    assert config.get(config.GEMM) == "torch"
    monkeypatch.delenv(config.GEMM)
    assert config.get(config.GEMM) == "auto"


def test_the_readers_go_through_the_registry(monkeypatch):
    from fastrnn import gemm, precision, threads
    assert (threads.ENV, precision.ENV, gemm.ENV, gemm.BF16_ENV) == \
        (config.NUM_THREADS, config.PRECISION, config.GEMM, config.BF16_GEMM)
    monkeypatch.setenv(config.BF16_GEMM, "amx")
    with pytest.raises(ValueError, match=r"^FASTRNN_BF16_GEMM='amx' must be one of"):
        gemm.default_bf16_provider()
    monkeypatch.setenv(config.PRECISION, "fp16")
    with pytest.raises(ValueError, match=r"^FASTRNN_PRECISION='fp16' must be one of"):
        fastrnn.get_precision()


def test_the_distributed_timeout_is_checked_before_any_process_group(monkeypatch):
    pytest.importorskip("torch")
    from fastrnn.captioning.distributed import DistributedContext
    monkeypatch.setenv(config.DIST_TIMEOUT, "5m")
    with pytest.raises(ValueError, match=r"^FASTRNN_DIST_TIMEOUT='5m' must be a number of "
                                         r"seconds > 0"):
        DistributedContext()


def test_no_module_reads_a_fastrnn_variable_past_the_registry():
    package = Path(fastrnn.__file__).parent
    raw_read = re.compile(r"environ(\.get)?[\[(]\s*[\"']FASTRNN_")
    offenders = [f"{path.relative_to(package)}:{n}"
                 for path in package.rglob("*.py") if path.name != "config.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if raw_read.search(line)]
    assert offenders == []


def test_the_benchmarks_read_their_variables_through_the_registry():
    raw_read = re.compile(r"environ(\.get)?[\[(]\s*[\"']FASTRNN_|getenv\(\s*[\"']FASTRNN_")
    offenders = [f"{path.name}:{n}" for path in (ROOT / "benchmarks").glob("*.py")
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if raw_read.search(line)]
    assert offenders == []
    conftest = (ROOT / "benchmarks" / "conftest.py").read_text(encoding="utf-8")
    for name in ("BENCH_SIZES", "BENCH_IMPLS"):
        assert f"fastrnn_config.get(fastrnn_config.{name})" in conftest


def test_setup_py_reads_the_registered_no_extensions_variable():
    # setup.py runs before fastrnn can be imported, so it cannot use the registry: it
    # reads os.environ under a name of its own, which must be the registered one.
    setup_py = (ROOT / "setup.py").read_text(encoding="utf-8")
    names = re.findall(r'^NO_EXTENSIONS_ENV = "([A-Z0-9_]+)"$', setup_py, flags=re.MULTILINE)
    assert names == [config.NO_EXTENSIONS]
    assert "os.environ.get(NO_EXTENSIONS_ENV, \"\").strip() not in (\"\", \"0\")" in setup_py
    assert set(re.findall(r"FASTRNN_[A-Z0-9_]+", setup_py)) == {config.NO_EXTENSIONS}


@pytest.mark.parametrize("raw, on", [("1", True), ("yes", True), (" 0 ", False), ("", False)])
def test_no_extensions_means_what_setup_py_makes_of_it(monkeypatch, raw, on):
    monkeypatch.setenv(config.NO_EXTENSIONS, raw)
    assert config.get(config.NO_EXTENSIONS) is on
    assert (raw.strip() not in ("", "0")) is on     # setup.py's rule


# ------------------------------------------------------------ docs/configuration.md

def test_docs_page_holds_the_generated_table():
    page = DOCS_PAGE.read_text(encoding="utf-8")
    assert config.markdown_table() in page, (
        "docs/configuration.md is out of date: paste fastrnn.config.markdown_table() over its "
        "table")


def test_docs_page_lists_exactly_the_registry_variables():
    page = DOCS_PAGE.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(FASTRNN_[A-Z0-9_]+)` \|", page, flags=re.MULTILINE)
    assert rows == list(config.VARIABLES)


# ------------------------------------------------------------ fastrnn.captioning.presets

def test_the_full_benchmark_shape_is_the_baseline_training_preset():
    from fastrnn.captioning.presets import BENCHMARK_SHAPES, TRAINING_PRESETS
    full, baseline = BENCHMARK_SHAPES["full"], TRAINING_PRESETS["baseline"]
    assert (full["N"], full["W"], full["H"]) == \
        (baseline["batch_size"], baseline["wordvec_dim"], baseline["hidden_dim"]) == \
        (1024, 256, 2048)


def test_the_command_lines_use_the_library_presets():
    from fastrnn.bench import training
    from fastrnn.captioning.presets import BENCHMARK_SHAPES, TRAINING_PRESETS
    from fastrnn.cli import bench, train
    assert training.PRESETS is BENCHMARK_SHAPES
    assert set(train.build_parser().parse_args([]).__dict__) >= set(train.PRESET_KEYS)
    assert train.settings_from(train.build_parser().parse_args(["--preset", "baseline"])) == \
        TRAINING_PRESETS["baseline"]
    choices = {a.dest: a.choices for a in bench.build_parser()._actions}
    assert sorted(choices["preset"]) == sorted(BENCHMARK_SHAPES)
