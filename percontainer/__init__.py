"""Per-container (per-tenant) variables, modelled on the Linux kernel's DEFINE_PER_CPU."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .futures import ContainerThreadPoolExecutor
    from .registry import TenantRegistry, UnknownTenantError

# Imported on first use (PEP 562): `import percontainer` stays as cheap as the core.
_LAZY = {
    "ContainerThreadPoolExecutor": "futures",
    "TenantRegistry": "registry",
    "UnknownTenantError": "registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'percontainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"  # the one place it is written: pyproject.toml reads this literal

__all__ = [
    "ENABLED",
    "IMPLEMENTATION",
    "Container",
    "ContainerClosedError",
    "ContainerError",
    "ContainerThreadPoolExecutor",
    "PerContainer",
    "TenantRegistry",
    "UnknownTenantError",
    "__version__",
    "containers",
    "current",
    "host",
    "per_container",
    "wrap",
]
