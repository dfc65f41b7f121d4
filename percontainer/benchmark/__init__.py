"""The side-by-side benchmark behind `python -m percontainer bench` and bench/."""

from __future__ import annotations

from .contenders import FIELDS, OPERATIONS, Contender, NotApplicable, all_contenders
from .runner import Settings, main_bench
from .timing import Case, interleaved_medians, loop_overhead, traced_bytes

__all__ = [
    "FIELDS", "OPERATIONS", "Case", "Contender", "NotApplicable", "Settings", "all_contenders",
    "interleaved_medians", "loop_overhead", "main_bench", "traced_bytes",
]
