"""The benchmark behind `python -m percontainer bench`: every contender gets a row or a reason,
the ratios carry their spread, the JSON its units and environment, the plot its legend aside."""

from __future__ import annotations

import contextvars
import importlib.metadata
import importlib.util
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import percontainer
from percontainer.benchmark import OPERATIONS, Case, all_contenders, runner
from percontainer.benchmark.report import Point, Row, environment, percontainer_version
from percontainer.benchmark.runner import (
    DISABLED_NAME,
    Settings,
    UsageError,
    format_table,
    main_bench,
)
from percontainer.benchmark.timing import in_fresh_context, interleaved_samples

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"ns", "B", "ratio", "ms"}


class Tiny(Settings):
    """A run small enough for the test suite; the figures mean nothing, the shape does."""

    @property
    def repeats(self) -> int:
        return 3

    @property
    def batch(self) -> float:
        return 1e-6  # one run of each statement per repeat

    @property
    def tenants(self) -> int:
        return 200

    @property
    def sweep_points(self) -> list[int]:
        return [1, 100]

    @property
    def declared_points(self) -> list[int]:
        return [1, 10]


def figures(node: Any) -> list[dict[str, Any]]:
    """Return every {value, unit} object in a JSON document (a sweep's points share the unit
    of their series)."""
    if isinstance(node, dict):
        found = [node] if "value" in node else []
        return found + [figure for key, child in node.items() if key != "points"
                        for figure in figures(child)]
    if isinstance(node, list):
        return [figure for child in node for figure in figures(child)]
    return []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, Any],
                                                                 Path | None]:
    """Run the benchmark once, Tiny: its table's lines, its JSON, and its plot if drawn."""
    lines: list[str] = []
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    plot = out.with_name("sweeps.png") if importlib.util.find_spec("matplotlib") else None
    assert main_bench(False, str(out), plot and str(plot), out=lines.append,
                      settings=Tiny()) == 0
    return lines, json.loads(out.read_text()), plot


@pytest.mark.slow  # the benchmark runs once, Tiny, for both
def test_every_contender_has_a_row_or_a_reason(
        tiny_run: tuple[list[str], dict[str, Any], Path | None]) -> None:
    lines, result, plot = tiny_run
    assert ("| operation | contender | median of 3 | vs percontainer | spread (IQR) | note |"
            in lines)
    table = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    names = [contender.name for contender in all_contenders()] + [DISABLED_NAME]
    for operation in OPERATIONS:
        for name in names:
            row = [line for line in table if line.startswith(f"| {operation} | {name} |")]
            assert len(row) == 1, (operation, name)
            cells = [cell.strip() for cell in row[0].strip("|").split("|")]
            if cells[2] == "skipped":
                assert cells[5] and not cells[3]
            else:
                assert cells[2].endswith(("ns", "B/tenant")) and cells[3].endswith("x")
    assert {row["operation"] for row in result["rows"]} >= set(OPERATIONS) | {"clone bits"}
    assert {series["sweep"] for series in result["sweeps"]} == {
        "read vs live containers", "switch vs live containers", "memory vs live containers",
        "read vs declared variables", "switch vs declared variables"}
    # The compiled core when it is importable here, else the twin.
    reference_read = [row for row in result["rows"]
                      if row["operation"] == "read" and row["contender"] == result["reference"]]
    assert reference_read[0]["median"]["value"] > 0
    if plot is not None:
        assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow  # the benchmark runs once, Tiny, for both
def test_the_json_carries_units_and_the_environment(
        tiny_run: tuple[list[str], dict[str, Any], Path | None]) -> None:
    result = tiny_run[1]
    assert result["schema"] == "percontainer-bench" and result["schema_version"] == 1
    measured_in = result["environment"]
    assert measured_in["percontainer"] == percontainer_version()
    assert measured_in["core"] == percontainer.IMPLEMENTATION
    assert measured_in["python_version"] == platform.python_version()
    assert measured_in["python_implementation"] == platform.python_implementation()
    assert measured_in["machine"] == platform.machine()
    assert isinstance(measured_in["cpu_count"], int) and measured_in["date"]
    assert result["settings"]["repeats"] == 3
    assert result["settings"]["loop_overhead"]["unit"] == "ns"
    found = figures(result)
    assert found and all(figure["unit"] in UNITS for figure in found)
    for row in result["rows"]:
        if row.get("skipped"):
            assert row["note"] and "median" not in row
            continue
        unit = "B" if row["operation"] == "memory" else "ns"
        assert row["median"]["unit"] == unit
        assert row["ratio"]["unit"] == "ratio" and row["ratio"]["against"]
        if row["operation"] != "memory":
            # The disabled worker, a process of its own, measures with the quick run's settings.
            repeats = Settings().repeats if row["contender"] == DISABLED_NAME else 3
            assert row["repeats"] == repeats and len(row["samples"]["value"]) == repeats
            low, high = row["median"]["quartiles"]
            assert low <= row["median"]["value"] <= high
    for series in result["sweeps"]:
        assert series["unit"] == ("B" if series["sweep"].startswith("memory") else "ns")
        assert series["x_unit"] and all({"x", "value"} <= set(p) for p in series["points"])


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the benchmark starts measuring."""
    def measuring(*args: object) -> float:
        raise AssertionError("measured before checking the outputs")

    monkeypatch.setattr(runner, "loop_overhead", measuring)
    monkeypatch.setattr(runner, "measure_operation", measuring)


@pytest.mark.usefixtures("no_measuring")
def test_outputs_are_checked_before_anything_is_measured(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist; create it first"):
        main_bench(False, str(tmp_path / "missing" / "bench.json"), None)
    with pytest.raises(UsageError, match="is not a format matplotlib writes|needs matplotlib"):
        main_bench(False, None, str(tmp_path / "sweeps.txt"))


@pytest.mark.usefixtures("no_measuring")
def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(UsageError, match=re.escape("pip install 'percontainer[plot]'")):
        main_bench(False, None, str(tmp_path / "plot.png"))
    assert not (tmp_path / "plot.png").exists()


def test_the_json_names_the_package_version() -> None:
    assert percontainer_version() == percontainer.__version__
    assert environment()["percontainer"] == percontainer.__version__


def _row(operation: str, contender: str, samples: list[float], paired: bool = True) -> Row:
    middle = sorted(samples)[len(samples) // 2]
    return Row(operation, contender, middle, "", samples, paired)


def test_ratios_are_paired_by_repeat_and_carry_their_spread() -> None:
    # The contender was slowed in three repeats, the reference in two of those: each repeat's
    # ratio is 2 but one, while the two medians are 6 apart.
    reference = _row("read", "percontainer", [10, 10, 10, 30, 30])
    steady = _row("read", "steady", [20, 20, 60, 60, 60])
    noisy = _row("read", "noisy", [10, 20, 30, 40, 200])
    apart = _row("read", DISABLED_NAME, [12, 12, 12, 12, 12], paired=False)
    lines = list(format_table([reference, steady, noisy, apart], 5.0, 5))
    assert lines[0] == ("| operation | contender | median of 5 | vs percontainer | spread (IQR) "
                        "| note |")
    cells = {line.split(" | ")[1]: [cell.strip() for cell in line.strip("|").split("|")]
             for line in lines if line.startswith("| read")}
    assert cells["percontainer"][3:5] == ["1.00x", ""]
    assert cells["steady"][3:5] == ["2.00x", "2.00-2.00x"]
    # Ratios 1, 2, 3, 1.33, 6.67: the middle half is wider than ±10%, and flagged.
    assert cells["noisy"][3:5] == ["2.00x", "1.33-3.00x !"]
    assert cells[DISABLED_NAME][3:5] == ["1.20x", "1.20-1.20x"]  # unpaired: over the median
    assert any(line.startswith("! 1 spread is wider than ±10%") for line in lines)


def test_memory_rows_have_a_ratio_and_no_spread() -> None:
    lines = list(format_table([Row("memory", "percontainer", 100.0),
                               Row("memory", "steady", 150.0)], 5.0, 5))
    assert "| memory | steady | 150.0 B/tenant | 1.50x |  |  |" in lines
    assert not any(line.startswith("!") for line in lines)


def test_each_case_runs_in_a_context_of_its_own() -> None:
    """A contender's leftover ContextVars (werkzeug's Local sets one and never unsets it) stay
    in its own context: they neither reach the caller's nor another case's."""
    leftover: contextvars.ContextVar[int] = contextvars.ContextVar("tests.bench.leftover")
    seen: list[int | None] = []

    def make() -> Case:
        leftover.set(1)
        return Case("seen.append(leftover.get(None))", {"seen": seen, "leftover": leftover})

    def other() -> Case:
        return Case("seen.append(leftover.get(None) or 0)", {"seen": seen, "leftover": leftover})

    cases = {"sets": in_fresh_context(make), "other": in_fresh_context(other)}
    assert leftover.get(None) is None
    samples = interleaved_samples(cases, repeats=4, overhead=0.0, batch=1e-9)
    assert {key: len(values) for key, values in samples.items()} == {"sets": 4, "other": 4}
    assert set(seen) == {1, 0} and leftover.get(None) is None


def _points() -> list[Point]:
    """Three sweeps, two contenders, a point at zero (the overhead subtracted to nothing)."""
    return [
        Point("read vs live containers", "percontainer", 1, 40.0),
        Point("read vs live containers", "percontainer", 10_000, 20.0),
        Point("read vs live containers", "globals-in-structs", 1, 60.0),
        Point("read vs live containers", "globals-in-structs", 10_000, 0.0),
        Point("memory vs live containers", "globals-in-structs", 100, 200.0),
        Point("memory vs live containers", "percontainer", 100, 230.0),
        Point("memory vs live containers", "percontainer", 10_000, 280.0),
        Point("read vs declared variables", "percontainer", 1, 10.0),
        Point("read vs declared variables", "percontainer", 1_000, 11.0),
    ]


@pytest.mark.parametrize("sweeps", [3, 2], ids=["legend-beside", "legend-below"])
def test_the_plot_keeps_colours_title_points_and_legend_apart(sweeps: int) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import to_hex
    from matplotlib.text import Text

    from percontainer.benchmark.plot import draw, title

    heading = title(environment(), "quick")
    assert f"percontainer {percontainer_version()} ({percontainer.IMPLEMENTATION} core)" in heading
    assert f"{platform.python_implementation()} {platform.python_version()}" in heading
    chosen = list(dict.fromkeys(point.sweep for point in _points()))[:sweeps]
    figure = draw([point for point in _points() if point.sweep in chosen], heading)
    FigureCanvasAgg(figure).draw()  # lays the figure out, so the boxes below are final
    headings = [text for text in figure.findobj(Text) if text.get_text() == heading]
    assert len(headings) == 1  # drawn once, above the panels
    panels = [axis for axis in figure.axes if axis.get_lines()]
    assert len(panels) == sweeps
    colours: dict[str, set[str]] = {}
    for axis in panels:
        left, right = axis.get_xlim()
        bottom, top = axis.get_ylim()
        for line in axis.get_lines():
            colours.setdefault(str(line.get_label()), set()).add(to_hex(line.get_color()))
            assert not line.get_clip_on()  # a point on an edge is drawn whole
            for x, y in zip(line.get_xdata(), line.get_ydata()):
                assert left < x < right and bottom <= y < top
    assert all(len(each) == 1 for each in colours.values()), colours  # one colour per contender
    assert len({next(iter(each)) for each in colours.values()}) == len(colours)
    legends = [legend for axis in figure.axes if (legend := axis.get_legend()) is not None]
    assert len(legends) == 1
    legend = legends[0].get_window_extent()
    assert {text.get_text() for text in legends[0].get_texts()} == set(colours)
    for axis in panels:
        assert not legend.overlaps(axis.get_window_extent())
    whole = figure.bbox
    for box in [legend, headings[0].get_window_extent()] + [axis.get_tightbbox()
                                                             for axis in panels]:
        assert box is not None
        assert whole.x0 <= box.x0 and box.x1 <= whole.x1
        assert whole.y0 <= box.y0 and box.y1 <= whole.y1


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_the_plot_is_written_in_the_suffix_s_format(tmp_path: Path, suffix: str,
                                                    magic: bytes) -> None:
    pytest.importorskip("matplotlib")
    from percontainer.benchmark.plot import check_plot_path, plot

    path = tmp_path / f"sweeps{suffix}"
    assert check_plot_path(str(path)) is None
    plot(_points(), str(path), "a heading")
    assert path.read_bytes().startswith(magic)
