"""fastrnn.bench.timer: the interleaved timer behind fastrnn-bench and benchmarks/, timed
with a fake clock (no assertion depends on how loaded the machine is)."""
import pytest

from fastrnn.bench.timer import Timing, round_order, time_interleaved


class FakeClock:
    """A clock that only moves when a fake contender says it has worked."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_contenders(clock, costs, calls):
    """name -> callable that logs ``(name, round's args)`` and advances the clock by
    ``costs[name](call number)`` seconds."""
    def make(name):
        def run(*args):
            calls.append((name, args))
            clock.now += costs[name](sum(1 for n, _ in calls if n == name))
            return f"{name}#{len(calls)}"
        return run
    return {name: make(name) for name in costs}


def test_every_contender_runs_once_per_round_in_rotating_order():
    clock, calls = FakeClock(), []
    contenders = fake_contenders(clock, {n: lambda k: 1.0 for n in "abc"}, calls)
    time_interleaved(contenders, iters=4, warmup=2, clock=clock)
    order = [name for name, _ in calls]
    assert len(order) == 3 * (2 + 4)
    rounds = [order[i:i + 3] for i in range(0, len(order), 3)]
    assert rounds == [list("abc"), list("bca"), list("cab"), list("abc"), list("bca"),
                      list("cab")]
    assert rounds == [round_order(list("abc"), r) for r in range(6)]


def test_warmup_rounds_are_run_but_not_recorded():
    clock, calls = FakeClock(), []
    # The k-th call of a contender takes k seconds (a: k, b: 10 k), so each sample says
    # which call it came from: with 2 warm-up rounds the samples are calls 3..5.
    contenders = fake_contenders(clock, {"a": lambda k: k, "b": lambda k: 10 * k}, calls)
    timing = time_interleaved(contenders, iters=3, warmup=2, clock=clock)
    assert len(calls) == 2 * 5
    assert timing.seconds == {"a": [3.0, 4.0, 5.0], "b": [30.0, 40.0, 50.0]}


def test_statistics_and_ratios_come_from_the_same_timed_rounds():
    clock, calls = FakeClock(), []
    costs = {"base": lambda k: [9.0, 2.0, 4.0, 3.0][k - 1],     # warm-up call 9 s: excluded
             "fast": lambda k: [99.0, 1.0, 1.0, 4.0][k - 1]}
    timing = time_interleaved(fake_contenders(clock, costs, calls), iters=3, warmup=1,
                              baseline="base", clock=clock)
    assert timing.median("base") == 3.0 and timing.min("base") == 2.0
    assert timing.median("fast") == 1.0 and timing.max("fast") == 4.0
    assert timing.ratio("fast") == pytest.approx(1.0 / 3.0)
    assert timing.ratio("base") == 1.0
    assert timing.summary() == {
        "base": {"median": 3.0, "min": 2.0, "max": 4.0, "ratio": 1.0},
        "fast": {"median": 1.0, "min": 1.0, "max": 4.0, "ratio": pytest.approx(1.0 / 3.0)}}


def test_even_number_of_rounds_takes_the_middle_mean_as_median():
    timing = Timing({"a": [4.0, 1.0, 3.0, 2.0]})
    assert timing.median("a") == 2.5
    with pytest.raises(ValueError, match="no baseline"):
        timing.ratio("a")
    assert timing.summary() == {"a": {"median": 2.5, "min": 1.0, "max": 4.0}}


def test_round_args_reach_every_contender_and_results_reach_on_result():
    clock, calls, seen = FakeClock(), [], []
    contenders = fake_contenders(clock, {"a": lambda k: 1.0, "b": lambda k: 1.0}, calls)
    time_interleaved(contenders, iters=2, warmup=1, round_args=lambda r: (r, f"batch{r % 2}"),
                     on_result=lambda name, r, value: seen.append((name, r, value)), clock=clock)
    assert calls == [("a", (0, "batch0")), ("b", (0, "batch0")),
                     ("b", (1, "batch1")), ("a", (1, "batch1")),
                     ("a", (2, "batch0")), ("b", (2, "batch0"))]
    assert [(name, r) for name, r, _ in seen] == [("a", 0), ("b", 0), ("b", 1), ("a", 1),
                                                  ("a", 2), ("b", 2)]
    assert [value for *_, value in seen] == [f"{name}#{i + 1}" for i, (name, _) in
                                             enumerate(calls)]


def test_on_result_stops_the_run_by_raising():
    clock, calls = FakeClock(), []
    contenders = fake_contenders(clock, {"a": lambda k: 1.0, "b": lambda k: 1.0}, calls)

    def refuse_b(name, r, value):
        if name == "b":
            raise RuntimeError(f"{name} failed in round {r}")

    with pytest.raises(RuntimeError, match="b failed in round 0"):
        time_interleaved(contenders, iters=3, on_result=refuse_b, clock=clock)
    assert [name for name, _ in calls] == ["a", "b"]


def test_reference_is_measured_once_per_timed_round_after_the_contenders():
    clock, calls = FakeClock(), []
    contenders = fake_contenders(clock, {"a": lambda k: 1.0, "b": lambda k: 1.0}, calls)

    def rate():
        calls.append(("sgemm", ()))
        return float(len(calls))

    timing = time_interleaved(contenders, iters=2, warmup=1, reference={"sgemm": rate},
                              clock=clock)
    order = [name for name, _ in calls]
    assert order == ["a", "b", "b", "a", "sgemm", "a", "b", "sgemm"]
    assert timing.reference == {"sgemm": [5.0, 8.0]}
    # The reference runs outside every contender's timed span.
    assert timing.seconds == {"a": [1.0, 1.0], "b": [1.0, 1.0]}


def test_progress_bar_runs_the_same_rounds(capsys):
    clock, calls = FakeClock(), []
    contenders = fake_contenders(clock, {"a": lambda k: 1.0, "b": lambda k: 2.0}, calls)
    timing = time_interleaved(contenders, iters=2, progress=True, desc="timer test", clock=clock)
    assert timing.seconds == {"a": [1.0, 1.0], "b": [2.0, 2.0]}
    assert "timer test" in capsys.readouterr().err


def test_the_real_clock_is_the_default():
    timing = time_interleaved({"noop": lambda: None}, iters=3)
    assert len(timing.seconds["noop"]) == 3 and all(s >= 0 for s in timing.seconds["noop"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(contenders={}, iters=1), "no contenders"),
    (dict(contenders={"a": lambda: None}, iters=0), "iters must be >= 1, got 0"),
    (dict(contenders={"a": lambda: None}, iters=-2), "iters must be >= 1, got -2"),
    (dict(contenders={"a": lambda: None}, iters=1, warmup=-1), "warmup must be >= 0, got -1"),
    (dict(contenders={"a": lambda: None}, iters=1, baseline="numpy"),
     "baseline 'numpy' is not a contender"),
])
def test_bad_arguments_are_clear_value_errors(kwargs, message):
    ran = []
    kwargs["contenders"] = {name: (lambda: ran.append(1)) for name in kwargs["contenders"]}
    with pytest.raises(ValueError, match=message):
        time_interleaved(**kwargs)
    assert ran == []
