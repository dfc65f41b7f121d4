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


def test_typed_counter_box_is_never_observed(pc: ModuleType, name: str) -> None:
    """A typed int64 counter boxes its values into one reused int while nothing else holds it
    (compiled core): whatever a caller keeps from get() or add() keeps its value."""
    import numpy as np

    var = pc.PerContainer(name, dtype=np.int64)
    c = pc.Container()
    try:
        with c:
            var.set(BIG)
            held = var.get()
            assert var.add(5) == BIG + 5 and held == BIG
            returned = var.add(1)
            again = var.add(1)
            read = var.get()
            assert (returned, again, read) == (BIG + 6, BIG + 7, BIG + 7)
            assert [var.add(1) for _ in range(3)] == [BIG + 8, BIG + 9, BIG + 10]
            var.set(250)  # up through the small-int cache's top
            assert [var.add(3) for _ in range(4)] == [253, 256, 259, 262]
            assert var.add(-10) == 252 and var.add(0) == 252
            var.set(2**30 - 2)  # across the one-digit boundary
            assert [var.add(1) for _ in range(4)] == [2**30 - 1, 2**30, 2**30 + 1, 2**30 + 2]
            assert var.add(2**40) == 2**40 + 2**30 + 2
            assert var.get() == 2**40 + 2**30 + 2
            assert var.of(pc.host) == (0 if pc.ENABLED else var.get())
    finally:
        c.close()


@pytest.mark.c_extension
def test_the_in_place_paths_are_on_where_the_layout_is_known() -> None:
    """3.10 to 3.13 with a GIL: the int layout is mirrored from the headers, so add() of an
    unshared counter keeps its int object, and a wrong layout would fail the value tests
    above. Off from 3.14 (borrowed stack references) and on free-threaded builds."""
    import sys
    import sysconfig

    from percontainer import _core_c

    expected = (3, 10) <= sys.version_info[:2] < (3, 14) and not sysconfig.get_config_var(
        "Py_GIL_DISABLED")
    assert _core_c._ints_in_place() is expected
    if not expected:
        return
    var = _core_c.PerContainer("tests.in_place.layout", default=0)
    c = _core_c.Container()
    try:
        with c:
            var.set(BIG)  # a constant, held by this code too
            var.add(1)  # so a new int, which only the container holds
            before = id(var.get())
            var.add(1)  # a new int would be made while the old one is alive: another address
            assert id(var.get()) == before and var.get() == BIG + 2
    finally:
        c.close()
