"""Everything README's API section names is importable from percontainer, on either core."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import percontainer

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_name_in_all_is_importable() -> None:
    for name in percontainer.__all__:
        assert getattr(percontainer, name) is not None, name
    assert {"TenantRegistry", "UnknownTenantError", "ContainerThreadPoolExecutor"} <= set(
        dir(percontainer))


def test_the_api_sections_names_are_exported() -> None:
    """The names README's API section introduces as `Name(` or `name()` are in __all__."""
    text = README.read_text(encoding="utf-8")
    api = text[text.index("## API"):text.index("## Semantics")]
    shown = set(re.findall(r"^- `@?([A-Za-z_]+)\(", api, flags=re.M))
    assert shown, "README's API section lists no names: the pattern is out of date"
    assert shown <= set(percontainer.__all__), shown - set(percontainer.__all__)


def test_the_integrations_load_on_first_use() -> None:
    code = ("import sys, percontainer; "
            "assert 'percontainer.registry' not in sys.modules; "
            "assert 'percontainer.futures' not in sys.modules; "
            "from percontainer import TenantRegistry, ContainerThreadPoolExecutor; "
            "from percontainer.registry import TenantRegistry as R; assert TenantRegistry is R")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=README.parent)
