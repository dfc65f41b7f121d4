"""The selector: the compiled core where it imports, else the pure-Python twin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._config import NO_EXTENSIONS

if TYPE_CHECKING or NO_EXTENSIONS:
    from ._core_py import (
        ENABLED, Container, PerContainer, containers, current, enter_from, host, leave,
        per_container, wrap,
    )

    IMPLEMENTATION: str = "python"  # a str, not a literal: "cython" where it imports
else:
    try:
        from ._core_c import (
            ENABLED, Container, PerContainer, containers, current, enter_from, host, leave,
            per_container, wrap,
        )

        IMPLEMENTATION = "cython"
    except ImportError:  # built without a compiler: the twin has the same names and semantics
        import os

        if os.path.exists(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.py")):
            # A source checkout without its build: likely a mistake, so say how to fix it. An
            # installed twin (pip found no compiler) says nothing: IMPLEMENTATION tells.
            import warnings

            warnings.warn(
                "percontainer: the compiled core is not built in this checkout, so the "
                "pure-Python twin runs (slower, same semantics). Build it with `python setup.py "
                "build_ext --inplace`, or set PERCONTAINER_NO_EXTENSIONS=1 to choose the twin "
                "silently.",
                RuntimeWarning,
                stacklevel=2,
            )
        from ._core_py import (
            ENABLED, Container, PerContainer, containers, current, enter_from, host, leave,
            per_container, wrap,
        )

        IMPLEMENTATION = "python"

__all__ = [
    "ENABLED", "IMPLEMENTATION", "Container", "PerContainer", "containers", "current",
    "enter_from", "host", "leave", "per_container", "wrap",
]
