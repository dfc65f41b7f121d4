"""Measuring: medians of interleaved repeats in one process, and traced memory."""

from __future__ import annotations

import gc
import statistics
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "interleaved_medians", "loop_overhead", "traced_bytes"]


@dataclass
class Case:
    """One contender's statement for one operation, timed by timeit in `env`.

    `around`, if given, runs each timing batch (for example inside a container); `cleanup`
    undoes what preparing the case did."""

    stmt: str
    env: dict[str, Any] = field(default_factory=dict)
    setup: str = "pass"
    per: int = 1  # operations per run of stmt (a loop over tenants counts each)
    around: Callable[[Callable[[], float]], float] | None = None
    cleanup: Callable[[], None] | None = None

    def timer(self) -> Callable[[int], float]:
        """Return f(number) -> seconds for `number` runs of the statement."""
        compiled = timeit.Timer(self.stmt, self.setup, globals=self.env)
        around = self.around
        if around is None:
            return compiled.timeit
        return lambda number: around(lambda: compiled.timeit(number))


def loop_overhead(number: int, repeats: int) -> float:
    """Return the ns per iteration of timeit's empty loop (median of repeats)."""
    empty = timeit.Timer("pass")
    return statistics.median(empty.timeit(number) / number * 1e9 for _ in range(repeats))


def interleaved_medians(cases: dict[str, Case], number: int, repeats: int,
                        overhead: float) -> dict[str, float]:
    """Return ns per operation for each case: the median of repeats taken in turn (case A,
    case B, ..., then again), with the empty loop's cost subtracted."""
    timers = {key: case.timer() for key, case in cases.items()}
    samples: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(repeats):
        for key, run in timers.items():
            samples[key].append(run(number) / number * 1e9)
    return {key: max(statistics.median(values) - overhead, 0.0) / cases[key].per
            for key, values in samples.items()}


def traced_bytes(build: Callable[[], Any]) -> tuple[int, Any]:
    """Return the bytes that build() leaves allocated (tracemalloc), and what it built."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return after - before, built
