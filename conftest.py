"""Root conftest: the README example is a doctest, run where it can hold."""

from __future__ import annotations

import pytest

from percontainer import _config


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the README doctest in disabled mode: it shows tenants isolated from each other."""
    if not _config.DISABLED:
        return
    skip = pytest.mark.skip(reason="README shows isolation; PERCONTAINER_DISABLE=1 is set")
    for item in items:
        if item.path.name == "README.md":
            item.add_marker(skip)
