"""The side-by-side benchmark behind `python -m percontainer bench` and bench/."""

from __future__ import annotations

from .contenders import FIELDS, OPERATIONS, Contender, NotApplicable, all_contenders
from .runner import Settings, main_bench
from .timing import (
    Case,
    in_fresh_context,
    interleaved_medians,
    interleaved_samples,
    loop_overhead,
    traced_bytes,
)

__all__ = [
    "FIELDS", "OPERATIONS", "Case", "Contender", "NotApplicable", "Settings", "all_contenders",
    "in_fresh_context", "interleaved_medians", "interleaved_samples", "loop_overhead",
    "main_bench", "traced_bytes",
]
