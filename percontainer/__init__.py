"""Per-container (per-tenant) variables, modelled on the Linux kernel's DEFINE_PER_CPU."""

from __future__ import annotations

from ._core import (
    ENABLED,
    IMPLEMENTATION,
    Container,
    PerContainer,
    containers,
    current,
    host,
    per_container,
    wrap,
)
from ._errors import ContainerClosedError, ContainerError

__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads this literal

__all__ = [
    "ENABLED",
    "IMPLEMENTATION",
    "Container",
    "ContainerClosedError",
    "ContainerError",
    "PerContainer",
    "__version__",
    "containers",
    "current",
    "host",
    "per_container",
    "wrap",
]
