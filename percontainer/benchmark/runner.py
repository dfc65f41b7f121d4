"""`python -m percontainer bench`: every contender side by side, in one process.

Each figure is the median of interleaved repeats (every contender of an operation timed in
turn, then again), with timeit's empty-loop cost measured and subtracted. The disabled mode
is read at import, so its row comes from a second process run right after, and says so.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from .contenders import (
    FIELDS, OPERATIONS, Contender, NotApplicable, PerContainerContender, StructContender,
    all_contenders, struct_class,
)
from .timing import Case, interleaved_medians, loop_overhead

__all__ = ["Settings", "main_bench"]

DISABLED_NAME = "percontainer (disabled mode)"


@dataclass
class Settings:
    """How much to measure: the quick run fits in a minute on two cores."""

    full: bool = False

    @property
    def repeats(self) -> int:
        return 31 if self.full else 11

    def number(self, operation: str) -> int:
        base = {"read": 50_000, "write": 50_000, "increment": 50_000, "switch": 10_000,
                "create": 5_000, "sum": 2}.get(operation, 2_000)
        return base * 2 if self.full else base

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


@dataclass
class Row:
    """One figure of the table, or the reason it is missing."""

    operation: str
    contender: str
    value: float | None  # ns per operation, or bytes per tenant for memory
    note: str = ""

    @property
    def unit(self) -> str:
        return "B/tenant" if self.operation == "memory" else "ns/op"


@dataclass
class Point:
    """One point of a scaling sweep."""

    sweep: str
    contender: str
    x: int
    value: float


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
    """Time one operation for every contender that can do it, interleaved."""
    rows: list[Row] = []
    cases: dict[str, Case] = {}
    try:
        for contender in contenders:
            try:
                cases[contender.name] = contender.case(operation, settings.tenants)
            except NotApplicable as reason:
                rows.append(Row(operation, contender.name, None, str(reason)))
        medians = interleaved_medians(cases, settings.number(operation), settings.repeats,
                                      overhead)
    finally:
        for case in cases.values():
            if case.cleanup is not None:
                case.cleanup()
    note = f"over {settings.tenants:,} tenants" if operation == "sum" else ""
    rows[:0] = [Row(operation, name, value, note) for name, value in medians.items()]
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
    medians = interleaved_medians(cases, settings.number("create"), settings.repeats,
                                  overhead)
    parent.close()
    return [Row("clone bits", what, value) for what, value in medians.items()]


def measure_sweeps(pc: Any, settings: Settings, overhead: float,
                   progress: Progress) -> list[Point]:
    """Read and switch cost against live containers, read cost against declared variables,
    memory against containers: percontainer and globals-in-structs (ContextVar)."""
    import contextvars

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
        number = max(1, 20_000 // count)
        cases = {
            "read:percontainer": Case("for c in made: v.of(c)", env, per=count),
            "read:globals-in-structs": Case("for t in tenants: t.f0", env, per=count),
            "switch:percontainer": Case("for c in made:\n    with c: pass", env, per=count),
            "switch:globals-in-structs": Case(
                "for t in tenants:\n    tok = cur.set(t); cur.reset(tok)", env, per=count),
        }
        for key, value in interleaved_medians(cases, number, settings.repeats,
                                              overhead).items():
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
        for what, value in interleaved_medians(cases, settings.number("switch"),
                                               settings.repeats, overhead).items():
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
    environment = dict(os.environ, PERCONTAINER_DISABLE="1")
    done = subprocess.run(command, env=environment, capture_output=True, text=True,
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
    print(json.dumps([asdict(row) for row in rows]))
    return 0


def reference_name(rows: list[Row]) -> str:
    """Return the contender the ratios are taken against: the compiled core if it ran."""
    names = {row.contender for row in rows if row.value is not None}
    return "percontainer" if "percontainer" in names else "percontainer (pure-Python twin)"


def format_table(rows: list[Row], overhead: float) -> Iterator[str]:
    reference = reference_name(rows)
    by_operation: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.value is not None:
            by_operation.setdefault(row.operation, {})[row.contender] = row.value
    yield "| operation | contender | median | vs percontainer | note |"
    yield "|---|---|---:|---:|---|"
    for row in rows:
        if row.value is None:
            yield f"| {row.operation} | {row.contender} | skipped | | {row.note} |"
            continue
        base = by_operation.get(row.operation, {}).get(reference)
        if row.operation == "clone bits":
            base = by_operation["clone bits"].get(_clone_base(row.contender))
        ratio = f"{row.value / base:.2f}x" if base else ""
        unit = "B/tenant" if row.operation == "memory" else "ns"
        yield f"| {row.operation} | {row.contender} | {row.value:,.1f} {unit} | {ratio} | {row.note} |"
    yield ""
    yield (f"Median of interleaved repeats; timeit's empty loop ({overhead:.1f} ns per iteration) "
           "is subtracted from every time. Ratios: against percontainer (compiled) for the same "
           "operation; clone-bit rows against their unshared twin.")


def _clone_base(what: str) -> str:
    if what.startswith("create"):
        return "create, sharing none of 8 groups"
    return "read, a variable of its own"


def plot(points: list[Point], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = list(dict.fromkeys(point.sweep for point in points))
    rows = (len(sweeps) + 1) // 2
    figure, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), squeeze=False)
    for axis in axes.flat[len(sweeps):]:
        axis.set_visible(False)
    for axis, sweep in zip(axes.flat, sweeps):
        for contender in sorted({p.contender for p in points if p.sweep == sweep}):
            line = sorted((p.x, p.value) for p in points
                          if p.sweep == sweep and p.contender == contender)
            axis.plot([x for x, _ in line], [y for _, y in line], marker="o", label=contender)
        axis.set_xscale("log")
        axis.set_title(sweep)
        axis.set_xlabel(sweep.split(" vs ")[1])
        axis.set_ylabel("bytes per container" if sweep.startswith("memory") else "ns per op")
        axis.set_ylim(bottom=0)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main_bench(full: bool, json_path: str | None, plot_path: str | None,
               out: Callable[[str], None] = print, settings: Settings | None = None) -> int:
    """Run the benchmark, print the table; write JSON and a plot if asked. Return the exit
    status."""
    if plot_path is not None:
        try:
            import matplotlib  # noqa: F401  # checked before minutes of measuring, not after
        except ImportError:
            print("--plot needs matplotlib: pip install 'percontainer[plot]'", file=sys.stderr)
            return 2
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
    measured += measure_clone_bits(pc, settings, overhead)
    points = measure_sweeps(pc, settings, overhead, progress)
    progress.close()
    order = {name: i for i, name in enumerate(
        [c.name for c in contenders[:2]] + [DISABLED_NAME] + [c.name for c in contenders[2:]])}
    rows = sorted(measured + rows, key=lambda row: (_operation_order(row.operation),
                                                    order.get(row.contender, 99)))
    import percontainer

    out(f"percontainer {percontainer.__version__} ({percontainer.IMPLEMENTATION} core), "
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{'full' if full else 'quick'} run, {settings.repeats} repeats")
    out("")
    for line in format_table(rows, overhead):
        out(line)
    out("")
    for line in format_sweeps(points):
        out(line)
    if json_path is not None:
        with open(json_path, "w", encoding="utf-8") as stream:
            json.dump({"python": platform.python_version(), "machine": platform.machine(),
                       "full": full, "loop_overhead_ns": overhead,
                       "rows": [asdict(row) for row in rows],
                       "sweeps": [asdict(point) for point in points]}, stream, indent=1)
        out(f"\nwrote {json_path}")
    if plot_path is not None:
        plot(points, plot_path)
        out(f"wrote {plot_path}")
    return 0


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
