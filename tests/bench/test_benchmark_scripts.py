"""The comparison scripts in benchmarks/ check their numeric flags as the console scripts
do: a value that makes no sense ends in one line ``SCRIPT: error: ...`` naming the flag,
exit status 2, before any timing starts and never in a traceback."""
import importlib.util
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                          "benchmarks")


def script(name):
    spec = importlib.util.spec_from_file_location(f"_benchmark_{name}",
                                                  os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = [
    ("compare_gemm", ["--repeats", "0"], "--repeats"),
    ("compare_gemm", ["--repeats", "-2"], "--repeats"),
    ("compare_gemm", ["--repeats", "many"], "--repeats"),
    ("compare_backends", ["--repeats", "0"], "--repeats"),
    ("compare_backends", ["--repeats", "-1"], "--repeats"),
    ("compare_bf16_gemm", ["--rounds", "0"], "--rounds"),
    ("compare_bf16_gemm", ["--rounds", "-1"], "--rounds"),
    ("compare_bf16_gemm", ["--threads", "0"], "--threads"),
    ("compare_bf16_gemm", ["--threads", "-4"], "--threads"),
    ("compare_bf16_gemm", ["--threads", "100000"], "--threads"),
    ("bf16_convergence", ["fullscale", "--iters", "0"], "--iters"),
    ("bf16_convergence", ["fullscale", "--iters", "-1"], "--iters"),
]


@pytest.mark.parametrize("name, argv, flag", CASES,
                         ids=[f"{n} {' '.join(a)}" for n, a, _ in CASES])
def test_bad_number_is_one_usage_line(name, argv, flag, capsys):
    main = script(name).main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert exit_info.value.code == 2, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert len(lines) == 1 and lines[0].startswith(f"{name}.py: error: "), captured.err
    assert flag in lines[0], captured.err
