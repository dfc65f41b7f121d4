"""Containers: attributes, the registry, creation errors, entering and exiting, run(), wrap()."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from _pc_helpers import run_threads

import percontainer
from percontainer import _config, _errors

New = Callable[..., Any]


# -- the package and the host ----------------------------------------------------------------
def test_package_reexports_selected_core() -> None:
    assert percontainer.IMPLEMENTATION in {"python", "cython"}
    if _config.NO_EXTENSIONS:
        assert percontainer.IMPLEMENTATION == "python"
    assert percontainer.ContainerError is _errors.ContainerError
    assert percontainer.ContainerClosedError is _errors.ContainerClosedError
    assert percontainer.ENABLED is (not _config.DISABLED)


def test_errors_are_the_shared_classes(pc: ModuleType) -> None:
    assert pc.ContainerError is _errors.ContainerError
    assert pc.ContainerClosedError is _errors.ContainerClosedError
    assert issubclass(pc.ContainerClosedError, pc.ContainerError)
    assert issubclass(pc.ContainerError, RuntimeError)


def test_enabled_flag_follows_environment(pc: ModuleType) -> None:
    assert pc.ENABLED is (not _config.DISABLED)


def test_host(pc: ModuleType) -> None:
    host = pc.host
    assert isinstance(host, pc.Container)
    assert host.id == 0
    assert host.parent is None
    assert host.closed is False
    assert host.shared == frozenset()
    assert pc.current() is host
    assert pc.containers()[0] is host


def test_host_cannot_be_closed(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    var.set(3)
    try:
        before = pc.containers()
        with pytest.raises(pc.ContainerError, match="host"):
            pc.host.close()
        assert pc.host.closed is False
        assert pc.containers() == before
        assert var.get() == 3  # the host's values survive the refused close
        with pc.host:  # and it can still be entered
            assert var.get() == 3
    finally:
        var.reset()


# -- container attributes and the registry ---------------------------------------------------
def test_container_attributes(pc: ModuleType, new: New) -> None:
    a = new("tenant-a")
    b = new()
    assert a.name == "tenant-a"
    assert b.name is None
    assert a.parent is pc.host and b.parent is pc.host
    assert a.shared == frozenset() and isinstance(a.shared, frozenset)
    assert a.closed is False
    assert isinstance(a.id, int) and a.id > 0
    assert a.id != b.id


def test_ids_unique_increasing_and_never_reused(pc: ModuleType) -> None:
    seen: list[int] = []
    for _ in range(5):
        made = [pc.Container() for _ in range(4)]
        seen.extend(c.id for c in made)
        for c in made:
            c.close()
        assert all(c.id == seen[-4 + i] for i, c in enumerate(made))  # stable after close
    assert len(set(seen)) == len(seen)
    assert seen == sorted(seen)
    assert pc.host.id not in seen


def test_containers_lists_live_ones_host_first_in_creation_order(pc: ModuleType) -> None:
    before = pc.containers()
    a, b, c = pc.Container("a"), pc.Container("b"), pc.Container("c")
    try:
        assert pc.containers() == before + [a, b, c]
        b.close()
        assert pc.containers() == before + [a, c]
        listing = pc.containers()
        listing.clear()  # a fresh list: mutating it changes nothing
        assert pc.containers() == before + [a, c]
    finally:
        a.close()
        c.close()
    assert pc.containers() == before


def test_explicit_parent(pc: ModuleType, new: New) -> None:
    a = new("a")
    b = new("b", parent=a)
    c = new(parent=b)
    assert b.parent is a
    assert c.parent is b
    assert pc.containers()[-3:] == [a, b, c]


@pytest.mark.enabled_only
def test_parent_defaults_to_current(pc: ModuleType, new: New) -> None:
    a = new("a")
    with a:
        b = new("b")
        with b:
            c = new("c")
    assert b.parent is a
    assert c.parent is b
    d = new("d")
    assert d.parent is pc.host


def test_share_attribute(pc: ModuleType, new: New, name: str) -> None:
    keep1 = pc.PerContainer(name, default=0, group=f"{name}.g1")
    keep = pc.PerContainer(f"{name}.2", default=0, group=f"{name}.g2")
    assert (keep1.group, keep.group) == (f"{name}.g1", f"{name}.g2")
    assert new(share=[f"{name}.g1"]).shared == frozenset({f"{name}.g1"})
    assert new(share=(f"{name}.g1", f"{name}.g2")).shared == frozenset({f"{name}.g1", f"{name}.g2"})
    assert new(share=iter([f"{name}.g2"])).shared == frozenset({f"{name}.g2"})
    assert new(share={"default"}).shared == frozenset({"default"})
    assert new(share=[]).shared == frozenset()
    assert new(share=()).shared == frozenset()


def test_keyword_only_arguments(pc: ModuleType) -> None:
    before = pc.containers()
    with pytest.raises(TypeError):
        pc.Container("a", pc.host)
    assert pc.containers() == before


# -- creation errors leave the registry unchanged --------------------------------------------
@pytest.mark.parametrize("bad", [5, b"name", ["a"]])
def test_name_must_be_str_or_none(pc: ModuleType, bad: object) -> None:
    before = pc.containers()
    with pytest.raises(TypeError, match="name"):
        pc.Container(bad)
    assert pc.containers() == before


@pytest.mark.parametrize("bad", ["host", 0, object()])
def test_parent_must_be_a_container(pc: ModuleType, bad: object) -> None:
    before = pc.containers()
    with pytest.raises(TypeError, match="parent"):
        pc.Container(parent=bad)
    assert pc.containers() == before


def test_parent_must_be_open(pc: ModuleType) -> None:
    parent = pc.Container("p")
    parent.close()
    before = pc.containers()
    with pytest.raises(pc.ContainerClosedError):
        pc.Container(parent=parent)
    assert pc.containers() == before


def test_child_of_closed_descendant_refused(pc: ModuleType) -> None:
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    parent.close()
    assert child.closed
    before = pc.containers()
    with pytest.raises(pc.ContainerClosedError):
        pc.Container(parent=child)
    assert pc.containers() == before


def test_share_str_is_type_error(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    before = pc.containers()
    with pytest.raises(TypeError, match="share"):
        pc.Container(share=f"{name}.g")
    with pytest.raises(TypeError, match="share"):
        pc.Container(share="default")
    assert pc.containers() == before
    assert var.group == f"{name}.g"


@pytest.mark.parametrize("bad", [5, None, object()])
def test_share_not_iterable_is_type_error(pc: ModuleType, bad: object) -> None:
    before = pc.containers()
    with pytest.raises(TypeError, match="share"):
        pc.Container(share=bad)
    assert pc.containers() == before


def test_share_non_str_group_is_type_error(pc: ModuleType) -> None:
    before = pc.containers()
    with pytest.raises(TypeError):
        pc.Container(share=[1])
    with pytest.raises(TypeError):
        pc.Container(share=["default", None])
    assert pc.containers() == before


def test_share_unknown_group_is_value_error(pc: ModuleType, name: str) -> None:
    before = pc.containers()
    with pytest.raises(ValueError, match="never-declared"):
        pc.Container(share=[f"{name}.never-declared"])
    with pytest.raises(ValueError):
        pc.Container(share=["default", f"{name}.never-declared"])
    assert pc.containers() == before
    # The group becomes known once a variable is declared in it.
    var = pc.PerContainer(name, default=0, group=f"{name}.never-declared")
    c = pc.Container(share=[f"{name}.never-declared"])
    assert c.shared == {var.group}
    c.close()


def test_init_twice_is_refused(pc: ModuleType, new: New) -> None:
    c = new("first")
    before = pc.containers()
    with pytest.raises(TypeError):
        c.__init__("second")
    assert c.name == "first"
    assert c.parent is pc.host
    assert pc.containers() == before


# -- entering and exiting --------------------------------------------------------------------
def test_enter_returns_the_container(pc: ModuleType, new: New) -> None:
    c = new()
    with c as entered:
        assert entered is c


@pytest.mark.enabled_only
def test_enter_and_exit_switch_current(pc: ModuleType, new: New) -> None:
    a, b = new("a"), new("b")
    assert pc.current() is pc.host
    with a:
        assert pc.current() is a
        with b:
            assert pc.current() is b
            with a:  # re-entering is allowed and nests
                assert pc.current() is a
            assert pc.current() is b
        assert pc.current() is a
    assert pc.current() is pc.host


@pytest.mark.enabled_only
def test_exit_restores_current_on_exception(pc: ModuleType, new: New) -> None:
    a = new()
    with pytest.raises(KeyError), a:
        raise KeyError("boom")
    assert pc.current() is pc.host


def test_enter_closed_raises(pc: ModuleType) -> None:
    c = pc.Container()
    c.close()
    with pytest.raises(pc.ContainerClosedError), c:
        pytest.fail("entered a closed container")  # pragma: no cover
    with pytest.raises(pc.ContainerClosedError):
        c.run(lambda: None)
    assert pc.current() is pc.host


@pytest.mark.enabled_only
def test_misnested_exit_raises_and_changes_nothing(pc: ModuleType, new: New) -> None:
    a, b = new("a"), new("b")
    with a:
        with b:
            with pytest.raises(pc.ContainerError):
                a.__exit__(None, None, None)
            assert pc.current() is b
        assert pc.current() is a
    assert pc.current() is pc.host


@pytest.mark.enabled_only
def test_exit_without_enter_raises(pc: ModuleType, new: New) -> None:
    a = new()
    with pytest.raises(pc.ContainerError):
        a.__exit__(None, None, None)
    assert pc.current() is pc.host
    with a:  # still usable
        assert pc.current() is a


@pytest.mark.enabled_only
def test_exit_in_another_thread_raises(pc: ModuleType, new: New) -> None:
    a = new()
    with a:
        def other() -> Any:
            with pytest.raises(pc.ContainerError):
                a.__exit__(None, None, None)
            return pc.current()

        assert run_threads([other]) == [pc.host]
        assert pc.current() is a
    assert pc.current() is pc.host


# -- run() -----------------------------------------------------------------------------------
def test_run_returns_result_and_passes_arguments(pc: ModuleType, new: New) -> None:
    c = new()

    def fn(*args: Any, **kwargs: Any) -> Any:
        return args, kwargs, pc.current()

    args, kwargs, inside = c.run(fn, 1, 2, fn=3, self=4, x=5)
    assert args == (1, 2)
    assert kwargs == {"fn": 3, "self": 4, "x": 5}
    assert inside is (c if pc.ENABLED else pc.host)
    assert pc.current() is pc.host


def test_run_propagates_and_exits(pc: ModuleType, new: New) -> None:
    c = new()

    def boom() -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        c.run(boom)
    assert pc.current() is pc.host
    assert not c.closed


def test_run_not_callable_leaves_current(pc: ModuleType, new: New) -> None:
    c = new()
    with pytest.raises(TypeError):
        c.run(5)
    assert pc.current() is pc.host


# -- wrap() ----------------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_wrap_runs_in_container_current_at_wrap_time(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default="unset")
    a, b = new("a"), new("b")
    a.run(var.set, "in a")

    def probe(x: int, *, y: int) -> Any:
        return pc.current(), var.get(), x + y

    with a:
        wrapped = pc.wrap(probe)
    assert wrapped(1, y=2) == (a, "in a", 3)
    with b:  # calling it elsewhere still runs it in a
        assert wrapped(1, y=3) == (a, "in a", 4)
        assert pc.current() is b
    assert pc.current() is pc.host
    # in another thread, too
    assert run_threads([lambda: wrapped(0, y=0)]) == [(a, "in a", 0)]
    # wrapped in the host, it runs in the host
    in_host = pc.wrap(probe)
    with a:
        assert in_host(0, y=0) == (pc.host, "unset", 0)


def test_wrap_bad_input(pc: ModuleType) -> None:
    with pytest.raises(TypeError):
        pc.wrap(5)
    with pytest.raises(TypeError):
        pc.wrap(None)
    assert pc.current() is pc.host


def test_wrap_of_closed_container_raises(pc: ModuleType) -> None:
    c = pc.Container()
    calls: list[int] = []
    with c:
        wrapped = pc.wrap(lambda: calls.append(1))
    c.close()
    if pc.ENABLED:
        with pytest.raises(pc.ContainerClosedError):
            wrapped()
        assert calls == []
    assert pc.current() is pc.host


# -- threads start in the host ---------------------------------------------------------------
@pytest.mark.enabled_only
def test_current_is_per_thread(pc: ModuleType, new: New) -> None:
    a, b = new("a"), new("b")
    seen: dict[str, Any] = {}
    entered, release = threading.Event(), threading.Event()

    def worker() -> None:
        seen["start"] = pc.current()
        with b:
            seen["inside"] = pc.current()
            entered.set()
            assert release.wait(10)
        seen["end"] = pc.current()

    with a:
        thread = threading.Thread(target=worker)
        thread.start()
        assert entered.wait(10)
        assert pc.current() is a  # the thread's entering did not move this thread
        release.set()
        thread.join(10)
    assert seen == {"start": pc.host, "inside": b, "end": pc.host}


def test_run_passes_every_argument_on(pc: ModuleType) -> None:
    c = pc.Container("args")
    try:
        def echo(*args: object, **kwargs: object) -> tuple[Any, ...]:
            return args, kwargs, pc.current()

        assert c.run(echo) == ((), {}, c if pc.ENABLED else pc.host)
        got = c.run(echo, 1, "two", fn="kept", self="too")  # fn and self: fn's keywords
        assert got[:2] == ((1, "two"), {"fn": "kept", "self": "too"})
        with pytest.raises(TypeError):
            c.run()  # type: ignore[call-arg]  # no function
        with pytest.raises(ZeroDivisionError):
            c.run(lambda: 1 / 0)
        assert pc.current() is pc.host and not c.in_use  # left, whatever fn raised
    finally:
        c.close()
