"""Closing containers: idempotence, descendants, exit hooks, deferred teardown, access after close."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from _pc_helpers import Box, run_threads

New = Callable[..., Any]


class HookLog:
    """Declares variables whose exit hooks record (variable, value, current container)."""

    def __init__(self, pc: ModuleType, name: str) -> None:
        self.pc = pc
        self.name = name
        self.calls: list[tuple[str, Any, Any]] = []

    def var(self, suffix: str, **kwargs: Any) -> Any:
        def hook(value: Any) -> None:
            self.calls.append((suffix, value, self.pc.current()))

        if "factory" not in kwargs:
            kwargs.setdefault("default", 0)
        return self.pc.PerContainer(f"{self.name}.{suffix}", on_exit=hook, **kwargs)


class HookError(Exception):
    pass


# -- close() basics --------------------------------------------------------------------------
def test_close_marks_closed_and_unlists(pc: ModuleType) -> None:
    before = pc.containers()
    c = pc.Container()
    assert c in pc.containers()
    c.close()
    assert c.closed is True
    assert pc.containers() == before
    assert c.id > 0 and c.parent is pc.host  # attributes survive


def test_close_is_idempotent(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    c = pc.Container()
    c.run(var.set, 1)
    c.close()
    c.close()
    c.close()
    assert len(log.calls) == (1 if pc.ENABLED else 0)


def test_access_after_close_raises(pc: ModuleType, name: str) -> None:
    plain = pc.PerContainer(f"{name}.plain", default=0)
    made = pc.PerContainer(f"{name}.made", factory=Box)
    c = pc.Container()
    c.run(plain.set, 1)
    c.close()
    with pytest.raises(pc.ContainerClosedError):
        c.run(plain.get)
    with pytest.raises(pc.ContainerClosedError), c:
        pass
    with pytest.raises(pc.ContainerClosedError):
        pc.Container(parent=c)
    with pytest.raises(pc.ContainerClosedError):
        plain.of(c)
    with pytest.raises(pc.ContainerClosedError):
        made.of(c)  # the factory does not run in a closed container
    assert c not in dict(plain.items())


@pytest.mark.enabled_only
def test_values_are_dropped_at_close(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, factory=Box)
    other = pc.PerContainer(f"{name}.other")
    c = pc.Container()
    value_ref = weakref.ref(var.of(c))
    box = Box()
    box_ref = weakref.ref(box)
    c.run(other.set, box)
    del box
    assert value_ref() is not None and box_ref() is not None
    c.close()
    gc.collect()
    assert value_ref() is None
    assert box_ref() is None


@pytest.mark.enabled_only
def test_closing_a_shared_child_keeps_the_parents_values(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    parent = new()
    child = new(parent=parent, share=[f"{name}.g"])
    child.run(var.set, 5)
    child.close()
    assert var.of(parent) == 5
    assert var.items() == [(parent, 5)]


@pytest.mark.enabled_only
def test_access_to_closed_shared_child_raises(pc: ModuleType, new: New, name: str) -> None:
    """Any access through a closed container raises, even for a group it shares with a live parent.

    BUG (py twin): `var.of(closed_child)` returns the parent's value instead of raising.
    """
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    made = pc.PerContainer(f"{name}.made", factory=Box, group=f"{name}.g")
    parent = new()
    child = new(parent=parent, share=[f"{name}.g"])
    parent.run(var.set, 5)
    child.close()
    with pytest.raises(pc.ContainerClosedError):
        var.of(child)
    with pytest.raises(pc.ContainerClosedError):
        made.of(child)
    assert made.items() == []  # no factory ran on behalf of the closed child
    assert var.of(parent) == 5


# -- descendants -----------------------------------------------------------------------------
def test_close_closes_live_descendants(pc: ModuleType) -> None:
    before = pc.containers()
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    grandchild = pc.Container("g", parent=child)
    sibling = pc.Container("s", parent=parent)
    unrelated = pc.Container("u")
    try:
        parent.close()
        assert parent.closed and child.closed and grandchild.closed and sibling.closed
        assert not unrelated.closed
        assert pc.containers() == before + [unrelated]
    finally:
        unrelated.close()


@pytest.mark.enabled_only
def test_descendants_hooks_run_before_ancestors(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    grandchild = pc.Container("g", parent=child)
    sibling = pc.Container("s", parent=parent)
    for i, c in enumerate([parent, child, grandchild, sibling]):
        c.run(var.set, i)
    parent.close()
    order = [where for _, _, where in log.calls]
    assert sorted(log.calls, key=lambda call: call[1]) == [
        ("v", 0, parent), ("v", 1, child), ("v", 2, grandchild), ("v", 3, sibling)]
    assert order[-1] is parent
    assert order.index(grandchild) < order.index(child)


@pytest.mark.enabled_only
def test_child_closed_earlier_is_not_closed_again(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    child.run(var.set, 1)
    child.close()
    assert log.calls == [("v", 1, child)]
    parent.close()
    assert log.calls == [("v", 1, child)]


# -- exit hooks ------------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_hooks_run_once_in_reverse_declaration_order_inside(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    first, second, third = log.var("first"), log.var("second"), log.var("third")
    unhooked = pc.PerContainer(f"{name}.unhooked", default=0)
    never_set = log.var("never-set")
    c = pc.Container()
    with c:
        third.set("3")  # set order differs from declaration order
        first.set("1")
        unhooked.set("u")
        second.set("2")
    assert never_set.of(c) == 0  # a default is not a held value: no hook
    c.close()
    assert log.calls == [("third", "3", c), ("second", "2", c), ("first", "1", c)]


@pytest.mark.enabled_only
def test_hooks_see_values_and_current_during_teardown(pc: ModuleType, name: str) -> None:
    seen: list[Any] = []
    a = pc.PerContainer(f"{name}.a", default=0)
    b = pc.PerContainer(f"{name}.b", default=0,
                        on_exit=lambda v: seen.append((v, pc.current(), a.get(), a.of(c))))
    c = pc.Container()
    with c:
        a.set(10)
        b.set(20)
    c.close()
    assert seen == [(20, c, 10, 10)]


@pytest.mark.enabled_only
def test_hook_order_follows_declaration_not_slot(pc: ModuleType, name: str) -> None:
    """Slots are reused after a variable is collected; hooks still go by declaration order."""
    log = HookLog(pc, name)
    doomed: Any = log.var("doomed")
    older = log.var("older")
    del doomed
    gc.collect()
    newer = log.var("newer")  # likely reuses doomed's (lower) slot
    c = pc.Container()
    with c:
        older.set(1)
        newer.set(2)
    c.close()
    assert log.calls == [("newer", 2, c), ("older", 1, c)]


@pytest.mark.enabled_only
def test_hooks_only_for_the_containers_own_storage(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    shared = log.var("shared", group=f"{name}.g")
    own = log.var("own")
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent, share=[f"{name}.g"])
    with child:
        shared.set("s")
        own.set("o")
    child.close()
    assert log.calls == [("own", "o", child)]
    parent.close()
    assert log.calls == [("own", "o", child), ("shared", "s", parent)]


@pytest.mark.enabled_only
def test_reset_value_gets_no_hook(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    c = pc.Container()
    with c:
        var.set(1)
        var.reset()
    c.close()
    assert log.calls == []


@pytest.mark.enabled_only
def test_factory_values_get_hooks(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v", factory=Box)
    c = pc.Container()
    value = var.of(c)
    c.close()
    assert log.calls == [("v", value, c)]


@pytest.mark.enabled_only
def test_hook_error_raised_by_close_after_every_hook(pc: ModuleType, name: str) -> None:
    calls: list[str] = []

    def failing(value: Any) -> None:
        calls.append("failing")
        raise HookError(value)

    first = pc.PerContainer(f"{name}.first", default=0, on_exit=lambda v: calls.append("first"))
    bad = pc.PerContainer(f"{name}.bad", default=0, on_exit=failing)
    last = pc.PerContainer(f"{name}.last", default=0, on_exit=lambda v: calls.append("last"))
    box = Box()
    box_ref = weakref.ref(box)
    c = pc.Container()
    with c:
        first.set(box)
        bad.set(2)
        last.set(3)
    del box
    before = [x for x in pc.containers() if x is not c]
    with pytest.raises(HookError):
        c.close()
    assert calls == ["last", "failing", "first"]  # every hook ran, once
    assert c.closed and pc.containers() == before
    gc.collect()
    assert box_ref() is None  # values dropped anyway
    with pytest.raises(pc.ContainerClosedError):
        first.of(c)
    c.close()  # idempotent, and the hooks do not run again
    assert calls == ["last", "failing", "first"]


@pytest.mark.enabled_only
def test_child_hook_error_still_closes_the_parent(pc: ModuleType, name: str) -> None:
    calls: list[Any] = []

    def hook(value: Any) -> None:
        calls.append(value)
        if value == "child":
            raise HookError(value)

    var = pc.PerContainer(name, default=0, on_exit=hook)
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    parent.run(var.set, "parent")
    child.run(var.set, "child")
    with pytest.raises(HookError):
        parent.close()
    assert calls == ["child", "parent"]
    assert parent.closed and child.closed
    assert parent not in pc.containers() and child not in pc.containers()


# -- deferred teardown -----------------------------------------------------------------------
@pytest.mark.enabled_only
def test_close_from_inside_defers_teardown_to_exit(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    a, b = log.var("a"), log.var("b")
    c = pc.Container()
    with c:
        a.set(1)
        b.set(2)
        c.close()
        assert c.closed and c not in pc.containers()
        assert log.calls == []  # someone is inside: teardown waits
        assert a.get() == 1 and b.add(1) == 3  # still readable and writable inside
        assert c not in dict(a.items()) and a.sum() == 0  # items() lists live containers only
        with pytest.raises(pc.ContainerClosedError):
            pc.Container()  # no new children of a closing container
        with pytest.raises(pc.ContainerClosedError), c:  # and no new entries
            pass
        c.close()  # idempotent while closing
        assert log.calls == []
    assert log.calls == [("b", 3, c), ("a", 1, c)]
    assert pc.current() is pc.host
    with pytest.raises(pc.ContainerClosedError):
        a.of(c)


@pytest.mark.enabled_only
def test_nested_entries_defer_to_the_outermost_exit(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    c = pc.Container()
    with c:
        with c:
            var.set(1)
            c.close()
        assert log.calls == []
        assert var.get() == 1
    assert log.calls == [("v", 1, c)]


@pytest.mark.enabled_only
def test_teardown_waits_for_last_thread(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    first, second = log.var("first"), log.var("second")
    c = pc.Container()
    c.run(first.set, "1")
    c.run(second.set, "2")
    inside = threading.Barrier(3)
    release = [threading.Event(), threading.Event()]
    idents: dict[str, int] = {}
    reads: list[Any] = []

    def worker(index: int) -> None:
        with c:
            inside.wait(10)
            assert release[index].wait(10)
            reads.append((first.get(), second.get()))
            idents[f"w{index}"] = threading.get_ident()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    inside.wait(10)
    c.close()  # returns at once; two threads are inside
    assert c.closed and log.calls == []
    release[0].set()
    threads[0].join(10)
    assert log.calls == []  # one is still inside
    release[1].set()
    threads[1].join(10)
    assert reads == [("1", "2"), ("1", "2")]
    assert [(v, value, where) for v, value, where in log.calls] == [("second", "2", c), ("first", "1", c)]
    with pytest.raises(pc.ContainerClosedError):
        first.of(c)


@pytest.mark.enabled_only
def test_deferred_hooks_run_in_the_last_thread(pc: ModuleType, name: str) -> None:
    where: list[Any] = []
    var = pc.PerContainer(name, default=0,
                          on_exit=lambda v: where.append((v, pc.current(), threading.get_ident())))
    c = pc.Container()
    entered, release = threading.Event(), threading.Event()
    ident: list[int] = []

    def worker() -> None:
        ident.append(threading.get_ident())
        with c:
            var.set(9)
            entered.set()
            assert release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    c.close()
    assert where == []
    release.set()
    thread.join(10)
    assert where == [(9, c, ident[0])]


@pytest.mark.enabled_only
def test_deferred_hook_error_goes_to_unraisablehook(pc: ModuleType, name: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    calls: list[Any] = []

    def failing(value: Any) -> None:
        calls.append(value)
        raise HookError(value)

    bad = pc.PerContainer(f"{name}.bad", default=0, on_exit=failing)
    good = pc.PerContainer(f"{name}.good", default=0, on_exit=calls.append)
    c = pc.Container()
    with c:  # the exit does not raise the hook's error
        good.set("good")
        bad.set("bad")
        c.close()
    assert calls == ["good", "bad"]  # reverse declaration order
    assert len(reported) == 1
    assert isinstance(reported[0].exc_value, HookError)
    assert pc.current() is pc.host
    assert c not in pc.containers()


@pytest.mark.enabled_only
def test_parent_close_with_thread_inside_child(pc: ModuleType, name: str) -> None:
    """Closing a parent closes a child with a thread inside: the child's teardown waits for it."""
    log = HookLog(pc, name)
    var = log.var("v")
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    parent.run(var.set, "parent")
    child.run(var.set, "child")
    entered, release = threading.Event(), threading.Event()
    reads: list[Any] = []

    def worker() -> None:
        with child:
            entered.set()
            assert release.wait(10)
            reads.append(var.get())

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    parent.close()
    assert parent.closed and child.closed
    assert ("v", "child", child) not in log.calls
    release.set()
    thread.join(10)
    assert reads == ["child"]
    assert sorted(log.calls, key=lambda call: call[1]) == [("v", "child", child), ("v", "parent", parent)]
    for c in (parent, child):
        with pytest.raises(pc.ContainerClosedError):
            var.of(c)


@pytest.mark.enabled_only
def test_teardown_waits_for_task_inside(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    c = pc.Container()

    async def main() -> None:
        entered, release = asyncio.Event(), asyncio.Event()

        async def inside() -> Any:
            with c:
                var.set("task")
                entered.set()
                await release.wait()
                return var.get(), pc.current()

        task = asyncio.create_task(inside())
        await entered.wait()
        c.close()
        assert log.calls == []
        release.set()
        assert await task == ("task", c)
        assert log.calls == [("v", "task", c)]

    asyncio.run(main())
    assert log.calls == [("v", "task", c)]


# -- close() from other threads ---------------------------------------------------------------
def test_concurrent_close_runs_hooks_once(pc: ModuleType, name: str) -> None:
    log = HookLog(pc, name)
    var = log.var("v")
    for _ in range(20):
        log.calls.clear()
        c = pc.Container()
        c.run(var.set, 1)
        barrier = threading.Barrier(4)

        def closer(barrier: threading.Barrier = barrier, c: Any = c) -> None:
            barrier.wait(10)
            c.close()

        run_threads([closer] * 4)
        assert c.closed
        assert len(log.calls) == (1 if pc.ENABLED else 0)


@pytest.mark.enabled_only
def test_parent_teardown_waits_for_a_thread_inside_a_child(pc: ModuleType, name: str) -> None:
    """Descendants first, even when one waits: the parent's storage outlives the child's users."""
    log = HookLog(pc, name)
    own = log.var("own")
    pooled = log.var("pooled", group=f"{name}.g")
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent, share=[f"{name}.g"])
    parent.run(own.set, "parent")
    parent.run(pooled.set, "pool")
    child.run(own.set, "child")
    entered, release = threading.Event(), threading.Event()
    reads: list[Any] = []

    def worker() -> None:
        with child:
            entered.set()
            assert release.wait(10)
            reads.append((own.get(), pooled.get(), pooled.add("+")))

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    parent.close()
    assert parent.closed and child.closed
    assert log.calls == []  # neither torn down: a thread is inside the child
    assert parent not in pc.containers() and child not in pc.containers()
    release.set()
    thread.join(10)
    assert reads == [("child", "pool", "pool+")]  # the shared group still read the parent's
    # The child first; then the parent's hooks, in reverse declaration order.
    assert log.calls == [("own", "child", child), ("pooled", "pool+", parent),
                         ("own", "parent", parent)]
    with pytest.raises(pc.ContainerClosedError):
        pooled.of(child)


# -- pin / unpin -----------------------------------------------------------------------------
def test_pin_defers_teardown_until_unpin(pc: ModuleType, name: str) -> None:
    """A pinned container that is closed keeps its values until its last unpin()."""
    log: list[Any] = []
    var = pc.PerContainer(name, default=None, on_exit=log.append)
    c = pc.Container()
    c.run(var.set, "kept")
    assert not c.pinned and not c.in_use
    c.pin()
    c.pin()
    assert c.pinned and c.in_use
    c.close()
    assert c.closed and log == []
    if pc.ENABLED:
        assert var.of(c) == "kept"  # still readable: the teardown waits
    c.unpin()
    assert log == []
    c.unpin()
    assert log == (["kept"] if pc.ENABLED else [])
    assert not c.pinned and not c.in_use
    with pytest.raises(pc.ContainerClosedError):
        var.of(c)


def test_pin_errors_leave_the_container_as_it_was(pc: ModuleType, new: New) -> None:
    c = new()
    with pytest.raises(pc.ContainerError, match="without a matching pin"):
        c.unpin()
    with c:  # a user inside is not a pin: unpin() must not steal its count
        with pytest.raises(pc.ContainerError, match="without a matching pin"):
            c.unpin()
        assert c.in_use == pc.ENABLED and not c.pinned
    c.close()
    with pytest.raises(pc.ContainerClosedError):
        c.pin()
    assert not c.pinned


def test_enter_from_enters_live_containers_only(pc: ModuleType, new: New) -> None:
    live, closed = new("live"), new("closed")
    closed.close()
    mapping = {"live": live, "closed": closed}
    assert pc.enter_from(mapping, "missing") is None
    assert pc.enter_from(mapping, "closed") is None
    assert pc.enter_from(mapping, "live") is live
    try:
        assert pc.current() is (live if pc.ENABLED else pc.host)
    finally:
        pc.leave(live)
    assert pc.current() is pc.host
