"""The area's layout never shows in values, whatever order slots are touched in; its memory
follows what a container touches (compiled core: flat slots, a table for outlying ones)."""

from __future__ import annotations

import gc
import random
import tracemalloc
from types import ModuleType

import pytest

COUNT = 1_000


def _declare(pc: ModuleType, name: str, count: int) -> list[object]:
    return [pc.PerContainer(f"{name}.{i}", default=None) for i in range(count)]


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled", "sparse-first",
                                   "outlier-then-cluster", "two-clusters", "cluster-at-the-end"])
def test_values_survive_every_touch_order(pc: ModuleType, name: str, order: str) -> None:
    variables = _declare(pc, name, COUNT)
    indexes = list(range(COUNT))
    if order == "descending":
        indexes.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(indexes)
    elif order == "sparse-first":
        indexes = indexes[::97] + indexes
    elif order == "outlier-then-cluster":  # the window starts far off, then moves
        indexes = [COUNT - 1, 3] + list(range(500, 560)) + indexes
    elif order == "two-clusters":  # the window holds one, the table the other, then both
        indexes = [i for pair in zip(range(100, 140), range(800, 840)) for i in pair] + indexes
    elif order == "cluster-at-the-end":
        indexes = list(range(COUNT - 40, COUNT)) + list(range(0, 40)) + indexes
    c = pc.Container()
    try:
        with c:
            for i in indexes:
                variables[i].set(("value", i))
            for i in indexes[::3]:
                variables[i].reset()
            for i in indexes[::3]:
                variables[i].set(("again", i))
        for i in range(COUNT):
            expected = ("again", i) if i in set(indexes[::3]) else ("value", i)
            assert variables[i].of(c) == expected
        if pc.ENABLED:
            assert pc.host.run(variables[0].get) is None  # nothing leaked into the host
    finally:
        c.close()


def _bytes(build: object) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()  # type: ignore[operator]
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before + 0 * len(kept)
    finally:
        tracemalloc.stop()


@pytest.mark.c_extension
def test_memory_follows_what_is_touched(name: str) -> None:
    import percontainer._core_c as pc

    variables = _declare(pc, name, COUNT)
    made: list[list[object]] = []

    def touch(indexes: list[int]) -> list[object]:
        containers = [pc.Container() for _ in range(100)]
        for container in containers:
            with container:
                for i in indexes:
                    variables[i].set(i)
        return containers

    def measure(indexes: list[int]) -> float:
        return _bytes(lambda: made.append(touch(indexes)) or made[-1]) / 100

    try:
        # Grow the typed variables' row table for every container made below, and let each
        # variable make whatever it makes on its first set, outside what is compared (rows
        # are reused after close) ...
        for container in [pc.Container() for _ in range(800)]:
            container.close()
        for container in touch(list(range(COUNT))):
            container.close()
        # ... and take the closed objects the type keeps for reuse (a free list of 64), so each
        # measure below allocates all of its own.
        made.append([pc.Container() for _ in range(100)])
        first_20 = measure(list(range(20)))
        last_20 = measure(list(range(COUNT - 20, COUNT)))
        far_then_middle_20 = measure([COUNT - 1] + list(range(500, 520)))
        one_far = measure([COUNT - 1])
        dense_down = measure(list(range(COUNT))[::-1])
        dense_up = measure(list(range(COUNT)))
    finally:
        for containers in made:
            for container in containers:
                container.close()  # type: ignore[attr-defined]
    # 20 variables after 980 others cost what the first 20 do (about 250 bytes with the
    # object): the window starts at them.
    assert abs(last_20 - first_20) < 8
    # An outlier touched first: the window moves to the cluster, the outlier to a table.
    assert far_then_middle_20 < first_20 + 120
    assert one_far < 200  # one outlying slot alone: a 2-slot window, not a 1,000-slot array
    assert dense_up < 8 * COUNT + 400  # every slot touched: about 8 bytes a slot
    assert dense_down < 1.5 * dense_up  # touched from the top down: still about flat
