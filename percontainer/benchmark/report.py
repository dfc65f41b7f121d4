"""What a run is reported with: the environment it ran in, the JSON document, output checks."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Point", "Row", "check_writable", "environment",
           "percontainer_version"]

SCHEMA = "percontainer-bench"
SCHEMA_VERSION = 1  # bumped when a field changes meaning or goes away


@dataclass
class Row:
    """One figure of the table, or the reason it is missing."""

    operation: str
    contender: str
    value: float | None  # the median: ns per operation, or bytes per tenant for memory
    note: str = ""
    samples: list[float] = field(default_factory=list)  # one figure per repeat
    paired: bool = True  # measured in the same rounds as the row it is compared with

    @property
    def unit(self) -> str:
        return "B" if self.operation == "memory" else "ns"

    @property
    def per(self) -> str:
        return "tenant" if self.operation == "memory" else "operation"


@dataclass
class Point:
    """One point of a scaling sweep: the median cost at x."""

    sweep: str
    contender: str
    x: int
    value: float

    @property
    def unit(self) -> str:
        return "B" if self.sweep.startswith("memory") else "ns"

    @property
    def per(self) -> str:
        return "container" if self.sweep.startswith("memory") else "operation"

    @property
    def x_unit(self) -> str:
        return self.sweep.split(" vs ")[1]


def percontainer_version() -> str:
    """Return percontainer's version (written once, in the package: pyproject reads it)."""
    import percontainer

    return percontainer.__version__


def environment() -> dict[str, Any]:
    """Return where and with what the figures were measured (as pyperf and pytest-benchmark
    record it)."""
    import percontainer

    return {
        "percontainer": percontainer_version(),
        "core": percontainer.IMPLEMENTATION,
        "virtualization": percontainer.ENABLED,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "python_compiler": platform.python_compiler(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def check_writable(option: str, path: str) -> str | None:
    """Return why `path` cannot be written (naming the option and the fix), or None."""
    target = Path(path)
    if target.is_dir():
        return f"{option} {path}: is a directory; give a file name inside it"
    parent = target.parent  # "." for a bare file name
    if not parent.is_dir():
        if parent.exists():
            return f"{option} {path}: {parent} is not a directory; pick another path"
        return f"{option} {path}: {parent} does not exist; create it first or pick another path"
    if target.exists() and not os.access(target, os.W_OK):
        return f"{option} {path}: the file is not writable; pick another path"
    if not target.exists() and not os.access(parent, os.W_OK | os.X_OK):
        return f"{option} {path}: cannot create files in {parent}; pick another directory"
    return None
