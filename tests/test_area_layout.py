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


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled", "sparse-first"])
def test_values_survive_every_touch_order(pc: ModuleType, name: str, order: str) -> None:
    variables = _declare(pc, name, COUNT)
    indexes = list(range(COUNT))
    if order == "descending":
        indexes.reverse()
    elif order == "shuffled":
        random.Random(7).shuffle(indexes)
    elif order == "sparse-first":
        indexes = indexes[::97] + indexes
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
    made: list[object] = []

    def touch(indexes: list[int]) -> list[object]:
        containers = [pc.Container() for _ in range(100)]
        for container in containers:
            with container:
                for i in indexes:
                    variables[i].set(i)
        made.extend(containers)
        return containers

    try:
        one_far = _bytes(lambda: touch([COUNT - 1])) / 100
        dense_down = _bytes(lambda: touch(list(range(COUNT))[::-1])) / 100
        dense_up = _bytes(lambda: touch(list(range(COUNT)))) / 100
    finally:
        for container in made:
            container.close()  # type: ignore[attr-defined]
    assert one_far < 400  # one outlying slot: a small table, not a 1,000-slot array
    assert dense_up < 8 * COUNT + 400  # every slot touched: about 8 bytes a slot
    assert dense_down < 1.5 * dense_up  # touched from the top down: still about flat
