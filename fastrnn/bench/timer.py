"""One interleaved timer for every side-by-side benchmark (``fastrnn-bench`` and ``benchmarks/``).

Contenders take turns: each round runs every contender once, so a burst of load from
elsewhere on a shared machine hits all of them alike instead of whichever one happened to
be running. Warm-up rounds run first and are not recorded (JIT compilation, thread pools,
first touch of memory). A round may also take reference measurements (the machine's sgemm
rate, say) under the same conditions, once per timed round.

    timing = time_interleaved({"numpy": f, "cython": g}, iters=5, warmup=1, baseline="numpy")
    timing.median("cython"), timing.ratio("cython")    # ratio < 1: faster than numpy
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm


@dataclass(frozen=True)
class Timing:
    """What ``time_interleaved`` measured: seconds per contender per timed round (warm-up
    excluded, in round order), each reference's value per timed round, and the baseline
    the ratios compare with."""

    seconds: dict[str, list[float]]
    reference: dict[str, list[float]] = field(default_factory=dict)
    baseline: str | None = None

    def median(self, name: str) -> float:
        return statistics.median(self.seconds[name])

    def min(self, name: str) -> float:
        return min(self.seconds[name])

    def max(self, name: str) -> float:
        return max(self.seconds[name])

    def ratio(self, name: str) -> float:
        """Median time of ``name`` over the baseline's median from the same rounds
        (< 1: faster than the baseline)."""
        if self.baseline is None:
            raise ValueError("no baseline: pass baseline=NAME to time_interleaved")
        return self.median(name) / self.median(self.baseline)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per contender: median, min and max seconds, and the ratio when there is a baseline."""
        rows = {}
        for name in self.seconds:
            rows[name] = {"median": self.median(name), "min": self.min(name),
                          "max": self.max(name)}
            if self.baseline is not None:
                rows[name]["ratio"] = self.ratio(name)
        return rows


def round_order(names: Sequence[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: ``names`` rotated by one place per round.

    Rotation rather than a fixed order, so that no contender always runs first (after the
    previous round's last contender has evicted its caches) or always last; rather than a
    shuffle, so that over any ``len(names)`` consecutive rounds every contender holds every
    place exactly once and runs are reproducible without a seed.
    """
    shift = round_index % len(names)
    return list(names[shift:]) + list(names[:shift])


def time_interleaved(
    contenders: Mapping[str, Callable[..., Any]],
    iters: int,
    *,
    warmup: int = 0,
    round_args: Callable[[int], Sequence[Any]] | None = None,
    on_result: Callable[[str, int, Any], None] | None = None,
    reference: Mapping[str, Callable[[], float]] | None = None,
    baseline: str | None = None,
    progress: bool = False,
    desc: str | None = None,
    leave: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``warmup + iters`` rounds of every contender, taking turns (``round_order``).

    contenders: name -> callable, called once per round.
    iters: timed rounds (>= 1); warmup: untimed rounds before them (>= 0).
    round_args: round index (0-based, warm-up rounds included) -> the positional arguments
        every contender gets in that round, so all of them see the same input; default none.
    on_result: called as ``on_result(name, round_index, returned_value)`` after each call,
        outside the timed span; raise from it to stop the run (a non-finite loss, say).
    reference: name -> callable returning a measurement (a GFLOP/s rate, say), called once
        after the contenders of every timed round; its values are recorded, not timed.
    baseline: the contender ``Timing.ratio`` compares with.
    progress, desc, leave: a tqdm progress bar over the calls, naming the running contender.
    clock: seconds as a float (``time.perf_counter``; tests inject a fake one).
    """
    names = list(contenders)
    if not names:
        raise ValueError("time_interleaved: no contenders to time")
    if iters < 1:
        raise ValueError(f"time_interleaved: iters must be >= 1, got {iters}")
    if warmup < 0:
        raise ValueError(f"time_interleaved: warmup must be >= 0, got {warmup}")
    if baseline is not None and baseline not in contenders:
        raise ValueError(f"time_interleaved: baseline {baseline!r} is not a contender; "
                         f"contenders: {names}")
    reference = dict(reference or {})
    seconds: dict[str, list[float]] = {name: [] for name in names}
    values: dict[str, list[float]] = {name: [] for name in reference}

    with tqdm(total=(warmup + iters) * len(names), disable=not progress, desc=desc,
              unit="it", leave=leave) as bar:
        for r in range(warmup + iters):
            args = tuple(round_args(r)) if round_args is not None else ()
            for name in round_order(names, r):
                bar.set_postfix_str(name)
                start = clock()
                result = contenders[name](*args)
                elapsed = clock() - start
                if on_result is not None:
                    on_result(name, r, result)
                if r >= warmup:
                    seconds[name].append(elapsed)
                bar.update()
            if r >= warmup:
                for name, measure in reference.items():
                    values[name].append(measure())
    return Timing(seconds, values, baseline)
