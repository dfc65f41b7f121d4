"""PERCONTAINER_DISABLE=1: the same API, but every container uses the host's storage.

Run with PERCONTAINER_DISABLE=1 (these tests skip otherwise).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from _pc_helpers import Box, run_threads

pytestmark = pytest.mark.disabled_only

New = Callable[..., Any]


def test_not_enabled(pc: ModuleType) -> None:
    assert pc.ENABLED is False


def test_current_is_always_the_host(pc: ModuleType, new: New) -> None:
    a, b = new("a"), new("b")
    with a as entered:
        assert entered is a
        assert pc.current() is pc.host
        with b:
            assert pc.current() is pc.host
        assert a.run(pc.current) is pc.host
    assert pc.wrap(pc.current)() is pc.host


def test_children_default_to_the_host(pc: ModuleType, new: New) -> None:
    a = new("a")
    with a:
        child = new("child")
    assert child.parent is pc.host
    explicit = new(parent=a)
    assert explicit.parent is a


def test_every_container_uses_the_host_storage(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    a, b = new("a"), new("b")
    with a:
        var.set(5)
    assert var.get() == 5
    assert var.of(b) == 5 and var.of(pc.host) == 5
    assert b.run(var.add, 1) == 6
    assert var.items() == [(pc.host, 6)]
    assert var.sum() == 6
    a.run(var.reset)
    assert var.get() == 0
    assert var.items() == []


def test_shared_groups_still_validated(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    before = pc.containers()
    with pytest.raises(TypeError):
        pc.Container(share=f"{name}.g")
    with pytest.raises(ValueError):
        pc.Container(share=[f"{name}.unknown"])
    assert pc.containers() == before
    c = new(share=[var.group])
    assert c.shared == {var.group}


def test_closed_check_remains(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    c = pc.Container()
    with c:
        wrapped = pc.wrap(var.get)  # wrapped in the host: disabled mode has no other current
    c.close()
    assert c.closed and c not in pc.containers()
    with pytest.raises(pc.ContainerClosedError), c:
        pass
    with pytest.raises(pc.ContainerClosedError):
        c.run(var.get)
    with pytest.raises(pc.ContainerClosedError):
        pc.Container(parent=c)
    with pytest.raises(pc.ContainerClosedError):
        var.of(c)
    assert wrapped() == 0


def test_exits_are_no_ops(pc: ModuleType, new: New) -> None:
    a, b = new("a"), new("b")
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # mis-nested: no error in disabled mode
    b.__exit__(None, None, None)
    b.__exit__(None, None, None)  # exiting twice: no error either
    assert pc.current() is pc.host


def test_closing_keeps_the_hosts_values_and_runs_no_hooks(pc: ModuleType, name: str) -> None:
    hooks: list[Any] = []
    var = pc.PerContainer(name, default=0, on_exit=hooks.append)
    c = pc.Container()
    with c:
        var.set(3)
        c.close()  # no one counts as inside: closed at once
    assert var.get() == 3
    assert hooks == []
    var.reset()


def test_host_still_cannot_be_closed(pc: ModuleType) -> None:
    with pytest.raises(pc.ContainerError):
        pc.host.close()
    assert not pc.host.closed


def test_threads_and_tasks_share_the_values(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    tenants = [new(f"t{i}") for i in range(4)]

    def worker(tenant: Any) -> Any:
        with tenant:
            for _ in range(1000):
                var.add(1)
            return pc.current()

    assert run_threads([lambda t=t: worker(t) for t in tenants]) == [pc.host] * 4
    assert var.get() == 4000

    async def task(tenant: Any) -> None:
        with tenant:
            var.add(1)
            await asyncio.sleep(0)
            assert pc.current() is pc.host

    async def main() -> None:
        await asyncio.gather(*(task(t) for t in tenants))

    asyncio.run(main())
    assert var.get() == 4004
    var.reset()


def test_factory_runs_once_in_the_host(pc: ModuleType, new: New, name: str) -> None:
    calls: list[Any] = []
    var = pc.PerContainer(name, factory=lambda: calls.append(pc.current()) or Box())
    a, b = new(), new()
    barrier = threading.Barrier(4)

    def reader(tenant: Any) -> Any:
        barrier.wait(10)
        return tenant.run(var.get)

    results = run_threads([lambda: reader(a), lambda: reader(b)] * 2)
    assert calls == [pc.host]
    assert all(r is results[0] for r in results)
    assert var.items() == [(pc.host, results[0])]
    var.reset()


def test_errors_are_unchanged(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name)
    with pytest.raises(LookupError, match=re.escape(repr(name))):
        var.get()
    with pytest.raises(TypeError, match="factory="):
        pc.PerContainer(f"{name}.m", default=[])
    self_reading: Any = None
    self_reading = pc.PerContainer(f"{name}.s", factory=lambda: self_reading.get())

    def attempt() -> None:  # in a thread, so that a deadlock fails instead of hanging
        with pytest.raises(pc.ContainerError):
            self_reading.get()

    run_threads([attempt], timeout=10)
