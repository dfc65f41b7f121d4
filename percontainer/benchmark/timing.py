"""Measuring: interleaved repeats in one process, each case in its own context; traced memory."""

from __future__ import annotations

import contextvars
import gc
import statistics
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "in_fresh_context", "interleaved_medians", "interleaved_samples",
           "loop_overhead", "quartiles", "traced_bytes"]


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


def in_fresh_context(make: Callable[[], Case]) -> Case:
    """Return the case make() builds in a new, empty Context, timed and cleaned up there."""
    # A contender may leave ContextVars set in the context it runs in (werkzeug's and asgiref's
    # Local set one per instance and never unset it). Every ContextVar set or reset copies the
    # context's mapping, so in a shared context one contender's leftovers would slow another's
    # switch, by an amount that changed from run to run with where the variables' hashes fell.
    context = contextvars.Context()
    case = context.run(make)
    around, cleanup = case.around, case.cleanup
    if around is None:
        case.around = lambda batch: context.run(batch)
    else:
        case.around = lambda batch: context.run(around, batch)
    if cleanup is not None:
        case.cleanup = lambda: context.run(cleanup)
    return case


def loop_overhead(number: int, repeats: int) -> float:
    """Return the ns per iteration of timeit's empty loop: the fastest of repeats, as other
    processes only ever add time (more would be subtracted from every figure)."""
    empty = timeit.Timer("pass")
    return min(empty.timeit(number) / number * 1e9 for _ in range(repeats))


def calibrated_number(run: Callable[[int], float], batch: float) -> int:
    """Return how many runs of the statement take about `batch` seconds."""
    number, took = 1, run(1)  # the first run also warms the statement up
    while took < batch / 10:
        number *= 10
        took = run(number)
    return max(1, round(number * batch / took)) if took > 0 else number


def interleaved_samples(cases: dict[str, Case], repeats: int, overhead: float,
                        batch: float) -> dict[str, list[float]]:
    """Return ns per operation for each case, one figure per repeat: the repeats are taken in
    turn (case A, case B, ..., then again), each a batch of about `batch` seconds, with the
    empty loop's cost subtracted. A repeat's figures are close in time, so their ratios are
    steadier than the ratio of two medians."""
    timers = {key: case.timer() for key, case in cases.items()}
    numbers = {key: calibrated_number(run, batch) for key, run in timers.items()}
    samples: dict[str, list[float]] = {key: [] for key in cases}
    order = list(timers)
    for repeat in range(repeats):
        # Alternate the order, so no case always runs right after the same neighbour.
        for key in order if repeat % 2 == 0 else reversed(order):
            number = numbers[key]
            elapsed = timers[key](number) / number * 1e9
            samples[key].append(max(elapsed - overhead, 0.0) / cases[key].per)
    return samples


def interleaved_medians(cases: dict[str, Case], repeats: int, overhead: float,
                        batch: float) -> dict[str, float]:
    """Return the median of interleaved_samples for each case."""
    return {key: statistics.median(values)
            for key, values in interleaved_samples(cases, repeats, overhead, batch).items()}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Return the first quartile, the median and the third quartile of values."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    first, median, third = statistics.quantiles(values, n=4, method="inclusive")
    return first, median, third


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
