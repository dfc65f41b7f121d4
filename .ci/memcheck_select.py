"""pytest plugin for .ci/memcheck (loaded with -p): keep only the compiled core's cases.

Under valgrind every test costs 20-50 times its time; the pure-Python twin's cases (the `pc`
fixture's "py" parameter) run no code of ours in C, so they are deselected.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, twin = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        (twin if params.get("pc") == "py" else keep).append(item)
    if twin:
        config.hook.pytest_deselected(items=twin)
        items[:] = keep
