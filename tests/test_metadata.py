"""`percontainer.__version__` is the distribution's version, written in one place."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

import percontainer

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_installed_distributions() -> None:
    """Report the version pip installed, where percontainer is imported from that install."""
    imported = Path(percontainer.__file__).resolve()
    # Installed distributions have a RECORD; an egg-info a build left in a checkout has none.
    installs = [distribution
                for distribution in importlib.metadata.distributions(name="percontainer")
                if distribution.read_text("RECORD") is not None
                and imported in {Path(str(distribution.locate_file(file))).resolve()
                                 for file in distribution.files or ()}]
    if not installs:
        pytest.skip("percontainer is imported from a source checkout, not from an install")
    assert [distribution.version for distribution in installs] == [percontainer.__version__]


def test_the_build_reads_the_version_from_the_package() -> None:
    """Declare the version dynamic in pyproject.toml, read from the literal in __init__.py."""
    init = ROOT / "percontainer" / "__init__.py"
    if not init.exists():
        pytest.skip("no package sources beside the tests (the tests of an unpacked sdist)")
    tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "percontainer.__version__"}
    # setuptools takes a literal assignment without importing the package: it must be one.
    literals = [node.value.value for node in ast.parse(init.read_text(encoding="utf-8")).body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and any(isinstance(target, ast.Name) and target.id == "__version__"
                        for target in node.targets)]
    assert literals == [percontainer.__version__]
