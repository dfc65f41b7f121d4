"""The environment switches, read once at import."""

from __future__ import annotations

import os
import sys

__all__ = ["env_flag", "NO_EXTENSIONS", "DISABLED"]

_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


def env_flag(name: str) -> bool:
    """Return True when the environment variable `name` is set to a true word."""
    return os.environ.get(name, "").strip().lower() not in _FALSE_WORDS


#: Use the pure-Python twin even where the compiled core imports.
NO_EXTENSIONS: bool = env_flag("PERCONTAINER_NO_EXTENSIONS") or sys.implementation.name != "cpython"

#: "Built without virtualization": every container shares the host's storage.
DISABLED: bool = env_flag("PERCONTAINER_DISABLE")
