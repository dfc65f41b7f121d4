"""The benchmark behind `python -m percontainer bench`: every contender gets a row or a reason."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from percontainer.benchmark import OPERATIONS, all_contenders
from percontainer.benchmark.runner import DISABLED_NAME, Settings, main_bench


class Tiny(Settings):
    """A run small enough for the test suite; the figures mean nothing, the shape does."""

    @property
    def repeats(self) -> int:
        return 1

    def number(self, operation: str) -> int:
        return 10

    @property
    def tenants(self) -> int:
        return 200

    @property
    def sweep_points(self) -> list[int]:
        return [1, 100]

    @property
    def declared_points(self) -> list[int]:
        return [1, 10]


@pytest.mark.slow
def test_every_contender_has_a_row_or_a_reason(tmp_path: Path) -> None:
    lines: list[str] = []
    out = tmp_path / "bench.json"
    assert main_bench(False, str(out), None, out=lines.append, settings=Tiny()) == 0
    table = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    names = [contender.name for contender in all_contenders()] + [DISABLED_NAME]
    for operation in OPERATIONS:
        for name in names:
            row = [line for line in table if line.startswith(f"| {operation} | {name} |")]
            assert len(row) == 1, (operation, name)
            cells = [cell.strip() for cell in row[0].strip("|").split("|")]
            assert cells[2] == "skipped" and cells[4] or cells[2].endswith(("ns", "B/tenant"))
    result = json.loads(out.read_text())
    assert {row["operation"] for row in result["rows"]} >= set(OPERATIONS) | {"clone bits"}
    assert {point["sweep"] for point in result["sweeps"]} == {
        "read vs live containers", "switch vs live containers", "memory vs live containers",
        "read vs declared variables", "switch vs declared variables"}
    percontainer_read = [row for row in result["rows"]
                         if row["operation"] == "read" and row["contender"] == "percontainer"]
    assert percontainer_read[0]["value"] > 0


def test_plot_without_matplotlib_says_how_to_get_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main_bench(False, None, str(tmp_path / "plot.png"), out=print) == 2
    assert "pip install 'percontainer[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "plot.png").exists()
