from __future__ import annotations

from types import ModuleType


def test_get_set_isolated(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    a, b = pc.Container("a"), pc.Container("b")
    try:
        with a:
            var.set(5)
        assert var.of(a) == 5
        assert var.of(b) == (0 if pc.ENABLED else 5)
    finally:
        a.close()
        b.close()
