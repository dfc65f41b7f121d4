"""add() may bump a counter's int in place when nothing else holds it: never observably."""

from __future__ import annotations

from types import ModuleType

import pytest

BIG = 10**6  # above the small-int cache, below one 30-bit digit


def test_add_never_changes_a_value_held_elsewhere(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    c = pc.Container()
    try:
        with c:
            var.set(BIG)
            held = var.get()
            assert var.add(5) == BIG + 5
            assert held == BIG  # the reader's int kept its value
            returned = var.add(1)
            var.add(1)
            assert returned == BIG + 6  # the int add() returned kept its value
            assert var.get() == BIG + 7
            var.set(2**30 - 2)  # across the one-digit boundary
            assert [var.add(1) for _ in range(4)] == [2**30 - 1, 2**30, 2**30 + 1, 2**30 + 2]
            var.set(BIG)
            assert var.add(-1) == BIG - 1
            assert var.add(2**40) == BIG - 1 + 2**40
    finally:
        c.close()


@pytest.mark.enabled_only
def test_add_leaves_shared_constants_alone(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=BIG)  # the default is one object for all containers
    a, b = pc.Container(), pc.Container()
    try:
        assert a.run(var.add, 1) == BIG + 1
        assert b.run(var.add, 2) == BIG + 2
        assert var.of(a) == BIG + 1 and a.run(var.add, 1) == BIG + 2
        assert var.get() == BIG  # the default itself never changed
    finally:
        a.close()
        b.close()
