"""`python -m percontainer bench`: every contender side by side, in one process.

Each figure is the median of interleaved repeats (every contender of an operation timed in
turn, then again), with timeit's empty-loop cost measured and subtracted; each ratio is the
median of the repeats' ratios, with their interquartile range as the spread. The disabled
mode is read at import, so its row comes from a second process run right after, and says so.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from .contenders import (
    FIELDS,
    OPERATIONS,
    Contender,
    NotApplicable,
    PerContainerContender,
    StructContender,
    all_contenders,
    struct_class,
)
from .report import SCHEMA, SCHEMA_VERSION, Point, Row, check_writable, environment
from .timing import (
    Case,
    in_fresh_context,
    interleaved_medians,
    interleaved_samples,
    loop_overhead,
    quartiles,
)

__all__ = ["Settings", "UsageError", "check_outputs", "main_bench"]

DISABLED_NAME = "percontainer (disabled mode)"
WIDE = 0.10  # a ratio's interquartile range wider than this, either side, is flagged


class UsageError(ValueError):
    """An output the run could not write: found before measuring, named with its fix."""


@dataclass
class Settings:
    """How much to measure: the quick run (CI runs it) takes seconds, the full one minutes."""

    full: bool = False

    @property
    def repeats(self) -> int:
        return 101 if self.full else 51

    @property
    def batch(self) -> float:
        """Seconds each repeat of a case runs for (its number of runs is calibrated to it):
        short, so that on a shared machine most repeats run without being preempted."""
        return 0.001 if self.full else 0.0005

    @property
    def tenants(self) -> int:
        """Tenants for `sum` and `memory`."""
        return 100_000 if self.full else 10_000

    @property
    def sweep_points(self) -> list[int]:
        return [1, 10, 100, 1_000, 10_000, 100_000] if self.full else [1, 100, 10_000]

    @property
    def declared_points(self) -> list[int]:
        return [1, 10, 100, 1_000] if self.full else [1, 1_000]


class Progress:
    """A one-line progress indicator on stderr (a line per step when it is not a terminal)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()

    def step(self, what: str) -> None:
        self.done += 1
        elapsed = time.perf_counter() - self.started
        line = f"[{self.done:>2}/{self.total}] {elapsed:5.1f}s {what}"
        if self.tty:
            self.stream.write(f"\r\033[K{line}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def measure_operation(operation: str, contenders: list[Contender], settings: Settings,
                      overhead: float) -> list[Row]:
    """Time one operation for every contender that can do it, interleaved, each contender in a
    context of its own."""
    rows: list[Row] = []
    cases: dict[str, Case] = {}
    try:
        for contender in contenders:
            try:
                cases[contender.name] = in_fresh_context(
                    functools.partial(contender.case, operation, settings.tenants))
            except NotApplicable as reason:
                rows.append(Row(operation, contender.name, None, str(reason)))
        samples = interleaved_samples(cases, settings.repeats, overhead, settings.batch)
    finally:
        for case in cases.values():
            if case.cleanup is not None:
                case.cleanup()
    note = f"over {settings.tenants:,} tenants" if operation == "sum" else ""
    rows[:0] = [Row(operation, name, quartiles(values)[1], note, values)
                for name, values in samples.items()]
    return rows


def measure_memory(contenders: list[Contender], settings: Settings) -> list[Row]:
    values = [object() for _ in range(FIELDS)]  # the same value objects for everyone
    tenants = settings.tenants // 10
    rows = []
    for contender in contenders:
        try:
            per_tenant = contender.memory_per_tenant(tenants, values)
            rows.append(Row("memory", contender.name, per_tenant,
                            f"{FIELDS} values set, {tenants:,} tenants, tracemalloc"))
        except NotApplicable as reason:
            rows.append(Row("memory", contender.name, None, str(reason)))
    return rows


def measure_clone_bits(pc: Any, settings: Settings, overhead: float) -> list[Row]:
    """The seed's flexibility claim: sharing groups with the parent (clone flags) should cost
    little at creation and on reads."""
    groups = frozenset(f"percontainer.bench.group{i}" for i in range(8))  # a constant, as in use
    keep = [pc.PerContainer(f"{group}.var", default=0, group=group) for group in sorted(groups)]
    own = pc.PerContainer("percontainer.bench.own", default=0)
    parent = pc.Container("parent")
    parent.run(keep[0].set, 1)
    child = pc.Container("child", parent=parent, share=groups)
    child.run(own.set, 1)
    env = {"Container": pc.Container, "parent": parent, "groups": groups,
           "shared": keep[0], "own": own}
    cases = {
        "create, sharing none of 8 groups": Case("Container(parent=parent).close()", env),
        "create, sharing all 8 groups": Case(
            "Container(parent=parent, share=groups).close()", env),
        "read, a variable of a shared group": Case("shared.get()", env, around=child.run),
        "read, a variable of its own": Case("own.get()", env, around=child.run),
    }
    samples = interleaved_samples(cases, settings.repeats, overhead, settings.batch)
    parent.close()
    return [Row("clone bits", what, quartiles(values)[1], "", values)
            for what, values in samples.items()]


def measure_sweeps(pc: Any, settings: Settings, overhead: float,
                   progress: Progress) -> list[Point]:
    """Read and switch cost against live containers, read cost against declared variables,
    memory against containers: percontainer and globals-in-structs (ContextVar)."""
    points: list[Point] = []
    var = pc.PerContainer("percontainer.bench.sweep", default=0)
    tenant_cls = struct_class()
    cur: contextvars.ContextVar[Any] = contextvars.ContextVar("bench.sweep")
    for count in settings.sweep_points:
        progress.step(f"sweep: {count:,} live containers")
        made = [pc.Container() for _ in range(count)]
        for container in made:
            container.run(var.set, 1)
        tenants = [tenant_cls() for _ in range(count)]
        env = {"made": made, "v": var, "tenants": tenants, "cur": cur}
        cases = {
            "read:percontainer": Case("for c in made: v.of(c)", env, per=count),
            "read:globals-in-structs": Case("for t in tenants: t.f0", env, per=count),
            "switch:percontainer": Case("for c in made:\n    with c: pass", env, per=count),
            "switch:globals-in-structs": Case(
                "for t in tenants:\n    tok = cur.set(t); cur.reset(tok)", env, per=count),
        }
        for key, value in interleaved_medians(cases, settings.repeats, overhead,
                                              settings.batch).items():
            sweep, contender = key.split(":")
            points.append(Point(f"{sweep} vs live containers", contender, count, value))
        for container in made:
            container.close()
    values = [object() for _ in range(FIELDS)]
    ours, theirs = _contender_for(pc), StructContender("contextvar")
    for count in settings.sweep_points:
        if count < 100:
            continue  # too few to divide tracemalloc's bookkeeping away
        progress.step(f"sweep: memory of {count:,} containers")
        for name, measured in (("percontainer", ours), ("globals-in-structs", theirs)):
            points.append(Point("memory vs live containers", name, count,
                                measured.memory_per_tenant(count, values)))
    for declared in settings.declared_points:
        progress.step(f"sweep: {declared:,} declared variables")
        variables = [pc.PerContainer(f"percontainer.bench.declared.{i}", default=0)
                     for i in range(declared)]
        container = pc.Container()
        container.run(variables[-1].set, 1)
        cases = {"read": Case("v.get()", {"v": variables[-1]}, around=container.run),
                 "switch": Case("with c: pass", {"c": container})}
        for what, value in interleaved_medians(cases, settings.repeats, overhead,
                                               settings.batch).items():
            points.append(Point(f"{what} vs declared variables", "percontainer", declared,
                                value))
        container.close()
        del variables
    return points


def _contender_for(pc: Any) -> PerContainerContender:
    contender = PerContainerContender("percontainer", pc.__name__)
    contender._module = pc
    return contender


def disabled_rows(settings: Settings) -> list[Row]:
    """Run the percontainer rows again in a process started with PERCONTAINER_DISABLE=1."""
    command = [sys.executable, "-m", "percontainer", "bench", "--disabled-worker"]
    if settings.full:
        command.append("--full")
    variables = dict(os.environ, PERCONTAINER_DISABLE="1")
    done = subprocess.run(command, env=variables, capture_output=True, text=True,
                          check=False, timeout=600)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [Row(operation, DISABLED_NAME, None, f"worker failed: {reason}")
                for operation in OPERATIONS]
    return [Row(**row) for row in json.loads(done.stdout)]


def disabled_worker(settings: Settings) -> int:
    """The second process: percontainer's own rows, virtualization disabled."""
    import percontainer

    if percontainer.ENABLED:
        print("the disabled worker needs PERCONTAINER_DISABLE=1", file=sys.stderr)
        return 2
    module = "percontainer._core_c" if percontainer.IMPLEMENTATION == "cython" else \
        "percontainer._core_py"
    from .contenders import PerContainerContender

    contender = PerContainerContender(DISABLED_NAME, module)
    overhead = loop_overhead(100_000, settings.repeats)
    rows = []
    for operation in OPERATIONS[:-1]:
        rows += measure_operation(operation, [contender], settings, overhead)
    rows += measure_memory([contender], settings)
    for row in rows:
        row.note = (row.note + "; " if row.note else "") + "separate process"
        row.paired = False  # its repeats ran in another process, not beside the reference's
    print(json.dumps([asdict(row) for row in rows]))
    return 0


def reference_name(rows: list[Row]) -> str:
    """Return the contender the ratios are taken against: the compiled core if it ran."""
    names = {row.contender for row in rows if row.value is not None}
    return "percontainer" if "percontainer" in names else "percontainer (pure-Python twin)"


def base_row(row: Row, rows: list[Row], reference: str) -> Row | None:
    """Return the row `row` is compared with: the reference's row for the same operation; for
    a clone-bit row, its unshared twin."""
    name = _clone_base(row.contender) if row.operation == "clone bits" else reference
    for other in rows:
        if other.operation == row.operation and other.contender == name and other.value:
            return other
    return None


def ratio_samples(row: Row, base: Row) -> list[float]:
    """Return row's ratios to base, one per repeat: each repeat's figure over base's figure of
    the same round when both were timed in the same rounds, else over base's median. Empty if
    either row has no figure."""
    if row.value is None or not base.value:
        return []
    if row.paired and base.paired and len(row.samples) == len(base.samples):
        paired = [mine / theirs for mine, theirs in zip(row.samples, base.samples) if theirs > 0]
        if paired:
            return paired
    return [mine / base.value for mine in row.samples] or [row.value / base.value]


def format_table(rows: list[Row], overhead: float, repeats: int) -> Iterator[str]:
    """Yield the table's lines: median, ratio and the ratio's spread for every row."""
    reference = reference_name(rows)
    yield (f"| operation | contender | median of {repeats} | vs percontainer | "
           "spread (IQR) | note |")
    yield "|---|---|---:|---:|---:|---|"
    wide = 0
    for row in rows:
        if row.value is None:
            yield f"| {row.operation} | {row.contender} | skipped | | | {row.note} |"
            continue
        ratios = ratio_samples(row, base) if (base := base_row(row, rows, reference)) else []
        ratio = spread = ""
        if ratios:
            first, median, third = quartiles(ratios)
            ratio = f"{median:.2f}x"
            if len(row.samples) > 1 and row is not base:
                spread = f"{first:.2f}-{third:.2f}x"
                if third - first > 2 * WIDE * median:
                    spread += " !"
                    wide += 1
        unit = "B/tenant" if row.operation == "memory" else "ns"
        yield (f"| {row.operation} | {row.contender} | {row.value:,.1f} {unit} | {ratio} | "
               f"{spread} | {row.note} |")
    yield ""
    yield (f"Times: the median of {repeats} interleaved repeats, each contender in a context of "
           f"its own; timeit's empty loop ({overhead:.1f} ns per iteration) is subtracted from "
           "every time. Ratios: against percontainer (compiled) for the same operation, "
           "clone-bit rows against their unshared twin; the median of the repeats' ratios (each "
           "repeat's time over the other's time in the same round), and their interquartile "
           "range as the spread (the separate process's rows: over the other's median). "
           "Memory: one tracemalloc measurement.")
    if wide:
        yield ""
        spreads = "1 spread is" if wide == 1 else f"{wide} spreads are"
        yield (f"! {spreads} wider than ±{WIDE:.0%} of the ratio: something else used the CPU "
               "while measuring. Run again on a quieter machine before comparing those rows.")


def _clone_base(what: str) -> str:
    if what.startswith("create"):
        return "create, sharing none of 8 groups"
    return "read, a variable of its own"


def check_outputs(json_path: str | None, plot_path: str | None) -> str | None:
    """Return why --json or --plot could not be written (naming the fix), or None."""
    if json_path is not None:
        problem = check_writable("--json", json_path)
        if problem is not None:
            return problem
    if plot_path is not None:
        from .plot import check_plot_path

        return check_plot_path(plot_path)
    return None


def main_bench(full: bool, json_path: str | None, plot_path: str | None,
               out: Callable[[str], None] = print, settings: Settings | None = None) -> int:
    """Run the benchmark, print the table; write JSON and a plot if asked. Return the exit
    status. Raise UsageError, before measuring anything, if an output cannot be written."""
    problem = check_outputs(json_path, plot_path)
    if problem is not None:
        raise UsageError(problem)
    settings = settings or Settings(full=full)
    contenders = all_contenders()
    available = []
    rows: list[Row] = []
    for contender in contenders:
        reason = contender.unavailable()
        if reason is None:
            available.append(contender)
        else:
            rows += [Row(operation, contender.name, None, reason) for operation in OPERATIONS]
    sweep_steps = len(settings.sweep_points) * 2 - 1 + len(settings.declared_points)
    progress = Progress(len(OPERATIONS) + 2 + sweep_steps)
    overhead = loop_overhead(100_000, settings.repeats)
    measured: list[Row] = []
    for operation in OPERATIONS[:-1]:
        progress.step(f"{operation}: {len(available)} contenders")
        measured += measure_operation(operation, available, settings, overhead)
    progress.step("memory per tenant")
    measured += measure_memory(available, settings)
    progress.step("disabled mode, in a second process")
    measured += disabled_rows(settings)
    pc = _reference_module(available)
    progress.step("clone bits")
    measured += contextvars.Context().run(measure_clone_bits, pc, settings, overhead)
    points = contextvars.Context().run(measure_sweeps, pc, settings, overhead, progress)
    progress.close()
    order = {name: i for i, name in enumerate(
        [c.name for c in contenders[:2]] + [DISABLED_NAME] + [c.name for c in contenders[2:]])}
    rows = sorted(measured + rows, key=lambda row: (_operation_order(row.operation),
                                                    order.get(row.contender, 99)))
    run = "full" if settings.full else "quick"
    measured_in = environment()
    out(f"percontainer {measured_in['percontainer']} ({measured_in['core']} core), "
        f"{measured_in['python_implementation']} {measured_in['python_version']}, "
        f"{measured_in['machine']}, {measured_in['cpu_count']} CPUs, {run} run: "
        f"{settings.repeats} repeats of about {settings.batch * 1e3:g} ms per contender")
    out("")
    for line in format_table(rows, overhead, settings.repeats):
        out(line)
    out("")
    for line in format_sweeps(points):
        out(line)
    status = 0
    if json_path is not None or plot_path is not None:
        out("")
    if json_path is not None:
        results = document(rows, points, overhead, settings, measured_in)
        status |= _write(json_path, lambda: _dump(results, json_path), out)
    if plot_path is not None:
        from .plot import plot, title

        heading = title(measured_in, run)
        status |= _write(plot_path, lambda: plot(points, plot_path, heading), out)
    return status


def _dump(results: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(results, stream, indent=1)
        stream.write("\n")


def _write(path: str, write: Callable[[], None], out: Callable[[str], None]) -> int:
    """Write an output after the run; a failure now (the disk filled up, the directory went
    away) is reported in a line, without losing the table already printed."""
    try:
        write()
    except OSError as error:
        print(f"could not write {path}: {error}", file=sys.stderr)
        return 1
    out(f"wrote {path}")
    return 0


def document(rows: list[Row], points: list[Point], overhead: float, settings: Settings,
             measured_in: dict[str, Any]) -> dict[str, Any]:
    """Return the JSON document of a run: every figure as {value, unit}, and where it ran."""
    reference = reference_name(rows)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "environment": measured_in,
        "settings": {
            "run": "full" if settings.full else "quick",
            "repeats": settings.repeats,
            "batch": {"value": settings.batch * 1e3, "unit": "ms"},
            "tenants": settings.tenants,
            "loop_overhead": {"value": overhead, "unit": "ns", "per": "iteration"},
        },
        "reference": reference,
        "rows": [_row_entry(row, rows, reference) for row in rows],
        "sweeps": _series(points),
    }


def _row_entry(row: Row, rows: list[Row], reference: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"operation": row.operation, "contender": row.contender,
                             "note": row.note}
    if row.value is None:
        entry["skipped"] = True
        return entry
    figure = {"unit": row.unit, "per": row.per}
    entry["median"] = {"value": row.value, **figure}
    entry["repeats"] = max(len(row.samples), 1)
    if row.samples:
        first, _, third = quartiles(row.samples)
        entry["median"]["quartiles"] = [first, third]
        entry["samples"] = {"value": row.samples, **figure}
    base = base_row(row, rows, reference)
    ratios = ratio_samples(row, base) if base is not None else []
    if base is not None and ratios:
        first, median, third = quartiles(ratios)
        entry["ratio"] = {"value": median, "unit": "ratio", "against": base.contender,
                          "quartiles": [first, third],
                          "paired": row.paired and base.paired and bool(row.samples)}
    return entry


def _series(points: list[Point]) -> list[dict[str, Any]]:
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for point in points:
        key = (point.sweep, point.contender)
        if key not in series:
            series[key] = {"sweep": point.sweep, "contender": point.contender,
                           "x_unit": point.x_unit, "unit": point.unit, "per": point.per,
                           "points": []}
        series[key]["points"].append({"x": point.x, "value": point.value})
    return list(series.values())


def format_sweeps(points: list[Point]) -> Iterator[str]:
    """Yield one line per sweep: each contender's value at each point."""
    for sweep in dict.fromkeys(point.sweep for point in points):
        unit = "B/container" if sweep.startswith("memory") else "ns/op"
        chosen = [point for point in points if point.sweep == sweep]
        parts = []
        for contender in dict.fromkeys(point.contender for point in chosen):
            values = ", ".join(f"{point.x:,}: {point.value:,.1f}"
                               for point in chosen if point.contender == contender)
            parts.append(f"{contender}: {values}")
        yield f"{sweep} ({unit}): " + "; ".join(parts)


def _operation_order(operation: str) -> int:
    order = list(OPERATIONS) + ["clone bits"]
    return order.index(operation) if operation in order else len(order)


def _reference_module(available: list[Contender]) -> Any:
    from .contenders import PerContainerContender

    for contender in available:
        if isinstance(contender, PerContainerContender):
            return contender.pc
    raise RuntimeError("no percontainer core is importable")
