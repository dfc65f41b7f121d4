"""Memory: closing containers and dropping variables gives everything back.

Growth is measured with tracemalloc after gc.collect(), after a warm-up round that fills the
registries' spare capacity (dict tables, free-slot heap) so that only real leaks remain.
"""

from __future__ import annotations

import gc
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
from _pc_helpers import Box

MIB = 1 << 20
CONTAINERS = 200_000
VARIABLES = 100_000

pytestmark = pytest.mark.slow  # hundreds of thousands of containers or variables per test


@contextmanager
def traced() -> Iterator[Callable[[], int]]:
    """Trace allocations; yield a function returning the traced bytes now, after a collection."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        def size() -> int:
            gc.collect()
            return tracemalloc.get_traced_memory()[0]

        yield size
    finally:
        if not was_tracing:
            tracemalloc.stop()


class Freed:
    """Weak references whose callbacks count the value objects that were freed."""

    def __init__(self) -> None:
        self.live: set[weakref.ref[Box]] = set()
        self.freed = 0

    def track(self, value: Box) -> Box:
        self.live.add(weakref.ref(value, self._gone))
        return value

    def _gone(self, ref: weakref.ref[Box]) -> None:
        self.live.discard(ref)
        self.freed += 1


def test_container_churn_is_flat_and_frees_values(pc: ModuleType, name: str) -> None:
    """200,000 containers made, used (a counter and a value object with an exit hook), closed."""
    freed = Freed()
    hooks = [0]

    def on_exit(value: Any) -> None:
        hooks[0] += 1

    counter = pc.PerContainer(f"{name}.counter", default=0)
    holder = pc.PerContainer(f"{name}.holder", default=None, on_exit=on_exit)
    Container = pc.Container

    def churn(rounds: int) -> None:
        for i in range(rounds):
            container = Container()
            with container:
                counter.add(1)
                holder.set(freed.track(Box(i)))
            container.close()

    before_containers = pc.containers()
    with traced() as size:
        churn(5_000)  # warm-up
        start = size()
        freed.freed = hooks[0] = 0
        churn(CONTAINERS)
        growth = size() - start
    if not pc.ENABLED:  # every container wrote the host's storage: the last values live there
        counter.reset()
        holder.reset()
        gc.collect()
    assert pc.containers() == before_containers
    assert growth < MIB, f"{growth} bytes retained by {CONTAINERS} closed containers"
    assert not freed.live, f"{len(freed.live)} values still alive"
    # (disabled: one host slot, so the warm-up's last value is freed in this round too)
    assert freed.freed == (CONTAINERS if pc.ENABLED else CONTAINERS + 1)
    assert hooks[0] == (CONTAINERS if pc.ENABLED else 0)


@pytest.mark.parametrize("batch", [1, 1_000])
def test_variable_churn_is_flat(pc: ModuleType, name: str, batch: int) -> None:
    """100,000 variables declared, given values in the host and a container, then dropped."""
    freed = Freed()
    container = pc.Container()

    def churn(count: int, tag: str) -> None:
        alive: list[Any] = []
        for i in range(count):
            var = pc.PerContainer(f"{name}.{tag}.{i}")
            var.set(freed.track(Box(i)))
            container.run(var.set, freed.track(Box(i)))
            alive.append(var)
            if len(alive) >= batch:
                alive.clear()  # dropped: slots and values go back
        alive.clear()

    try:
        with traced() as size:
            churn(2 * batch + 2_000, "warm")
            start = size()
            freed.freed = 0
            churn(VARIABLES, "run")
            growth = size() - start
        assert growth < MIB, f"{growth} bytes retained after dropping {VARIABLES} variables"
        assert not freed.live, f"{len(freed.live)} values still alive"
        assert freed.freed == 2 * VARIABLES
        # the names were released too: redeclaring starts empty
        again = pc.PerContainer(f"{name}.run.{VARIABLES - 1}")
        with pytest.raises(LookupError):
            again.of(container)
    finally:
        container.close()


def test_factory_churn_is_flat(pc: ModuleType, name: str) -> None:
    """Containers whose values a factory makes (the racing-reader bookkeeping is given back)."""
    freed = Freed()
    made = pc.PerContainer(name, factory=lambda: freed.track(Box("made")))
    rounds = 20_000

    def churn(count: int) -> None:
        for _ in range(count):
            container = pc.Container()
            made.of(container)
            container.close()

    with traced() as size:
        churn(2_000)
        start = size()
        churn(rounds)
        growth = size() - start
    made.reset()
    gc.collect()
    assert growth < MIB // 4, f"{growth} bytes retained by {rounds} factory calls"
    assert not freed.live


def test_typed_churn_is_flat(pc: ModuleType, name: str) -> None:
    """Containers using typed scalars and array views, closed: rows are reused, nothing grows."""
    np = pytest.importorskip("numpy")
    counter = pc.PerContainer(f"{name}.counter", dtype=np.int64)
    vector = pc.PerContainer(f"{name}.vector", dtype=np.float64, shape=4)
    Container = pc.Container

    def churn(rounds: int) -> None:
        for _ in range(rounds):
            container = Container()
            with container:
                counter.add(1)
                vector.get()[0] += 1.0  # a view: its row waits for it at teardown
            container.close()

    with traced() as size:
        churn(5_000)  # warm-up: the typed storage grows to what the churn needs
        start = size()
        churn(50_000)
        growth = size() - start
    assert growth < MIB, f"{growth} bytes retained by 50,000 closed containers"
    if pc.ENABLED:
        assert counter.sum() == 0 and float(vector.sum()[0]) == 0.0  # every row was zeroed
        assert len(counter.values()) == len(pc.containers())


def test_typed_variable_churn_is_flat(pc: ModuleType, name: str) -> None:
    """Typed variables declared, used in a container, then dropped: their columns go."""
    np = pytest.importorskip("numpy")
    container = pc.Container()

    def churn(count: int, tag: str) -> None:
        for i in range(count):
            var = pc.PerContainer(f"{name}.{tag}.{i}", dtype=np.int32, shape=(8,))
            container.run(var.set, i % 100)
            del var

    try:
        with traced() as size:
            churn(500, "warm")
            start = size()
            churn(5_000, "run")
            middle = size()
            churn(5_000, "again")
            windows = [middle - start, size() - middle]
        # A leak grows in both windows; a global table of the interpreter's (interned strings)
        # that happens to resize grows one of them once.
        assert min(windows) < MIB, f"{windows} bytes retained after dropping typed variables"
    finally:
        container.close()
