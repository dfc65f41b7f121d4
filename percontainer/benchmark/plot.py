"""The scaling sweeps drawn with matplotlib (the optional `plot` extra), one panel per sweep."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .report import Point, check_writable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["check_plot_path", "draw", "plot", "title"]

MARKERS = "osD^v<>ph*"


def check_plot_path(path: str) -> str | None:
    """Return why the plot cannot be written to `path` (naming the fix), or None."""
    try:
        import matplotlib  # noqa: F401  # first: its submodules may be imported already
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return "--plot needs matplotlib: pip install 'percontainer[plot]'"
    supported = sorted(FigureCanvasBase.get_supported_filetypes())
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in supported:
        what = f"'.{suffix}' is not a format matplotlib writes" if suffix else "no file suffix"
        return (f"--plot {path}: {what}; end the name with one of "
                + ", ".join(f".{name}" for name in supported))
    return check_writable("--plot", path)


def title(environment: dict[str, object], run: str) -> str:
    """Return the figure's title: what was measured, with what, where."""
    return (f"percontainer {environment['percontainer']} ({environment['core']} core), "
            f"{environment['python_implementation']} {environment['python_version']}, "
            f"{environment['machine']}, {environment['cpu_count']} CPUs, {run} run")


def draw(points: list[Point], heading: str) -> Figure:
    """Return the figure: a panel per sweep, a colour and a marker per contender in every
    panel, the heading above and one legend in a panel of its own."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    sweeps = list(dict.fromkeys(point.sweep for point in points))
    contenders = list(dict.fromkeys(point.contender for point in points))
    colour = {name: f"C{i}" for i, name in enumerate(contenders)}
    marker = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(contenders)}
    odd = len(sweeps) % 2 == 1
    # Rows of two panels, and for an even count of sweeps a lower row for the legend.
    heights = [1.0] * ((len(sweeps) + 1) // 2) + ([] if odd else [0.35])
    rows = len(heights)
    figure = Figure(figsize=(11, 3.4 * sum(heights) + 0.6))
    grid = figure.add_gridspec(rows, 2, height_ratios=heights)
    axes = [figure.add_subplot(grid[i // 2, i % 2]) for i in range(len(sweeps))]
    # The legend gets a panel of its own, the spare one beside the last sweep or a last row.
    key = figure.add_subplot(grid[rows - 1, 1] if odd else grid[rows - 1, :])
    for axis, sweep in zip(axes, sweeps):
        chosen = [point for point in points if point.sweep == sweep]
        for contender in contenders:
            line = sorted((p.x, p.value) for p in chosen if p.contender == contender)
            if line:
                # clip_on=False: a point on the y=0 edge is drawn whole, not cut in half.
                axis.plot([x for x, _ in line], [y for _, y in line], color=colour[contender],
                          marker=marker[contender], label=contender, clip_on=False)
        xs = [point.x for point in chosen]
        ys = [point.value for point in chosen]
        axis.set_xscale("log")
        axis.set_xlim(min(xs) / 2, max(xs) * 2)  # a margin on each side, in log space
        axis.set_ylim(0, max(ys) * 1.15 or 1.0)  # from zero, with room above the highest point
        axis.set_title(sweep)
        axis.set_xlabel(chosen[0].x_unit)
        axis.set_ylabel("bytes per container" if chosen[0].unit == "B" else "ns per operation")
        axis.grid(True, alpha=0.3)
    key.axis("off")
    handles = [Line2D([], [], color=colour[name], marker=marker[name], label=name)
               for name in contenders]
    key.legend(handles=handles, loc="center", ncol=1 if odd else min(len(contenders), 4),
               title="contenders")
    figure.suptitle(heading)
    figure.tight_layout()
    return figure


def plot(points: list[Point], path: str, heading: str) -> None:
    """Draw the sweeps and write them to path, in the format its suffix names."""
    draw(points, heading).savefig(path, dpi=100, bbox_inches="tight")
