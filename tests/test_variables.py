"""Variables: declaration, get/set/add/reset, of/items/sum, factories, sharing, redeclaration, GC."""

from __future__ import annotations

import functools
import gc
import importlib
import re
import sys
import textwrap
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _pc_helpers import Box, run_threads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

New = Callable[..., Any]


# -- declaration -----------------------------------------------------------------------------
def test_name_and_group(pc: ModuleType, name: str) -> None:
    a = pc.PerContainer(name, default=0)
    b = pc.PerContainer(f"{name}.b", default=0, group=f"{name}.g")
    assert (a.name, a.group) == (name, "default")
    assert (b.name, b.group) == (f"{name}.b", f"{name}.g")


def test_default_is_read_everywhere_until_set(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=7)
    c = new()
    assert var.get() == 7
    assert var.value == 7
    assert var.of(c) == 7
    assert c.run(var.get) == 7
    assert var.items() == []  # a default is not a held value
    assert var.sum() == 0


def test_default_none_is_a_default(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=None)
    assert var.get() is None


@pytest.mark.parametrize("default", [(), frozenset(), "text", b"bytes", 1.5, (1, (2,))])
def test_immutable_defaults_are_accepted(pc: ModuleType, name: str, default: object) -> None:
    var = pc.PerContainer(name, default=default)
    assert var.get() is default


class _MyList(list):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize("default", [[], {}, set(), bytearray(), [1, 2], {"a": 1}, _MyList()],
                         ids=["list", "dict", "set", "bytearray", "list1", "dict1", "subclass"])
def test_mutable_default_is_refused(pc: ModuleType, new: New, name: str, default: object) -> None:
    group = f"{name}.g"
    with pytest.raises(TypeError, match="factory="):
        pc.PerContainer(name, default=default, group=group)
    # Nothing was registered: not the group, not the name.
    with pytest.raises(ValueError):
        new(share=[group])
    other = pc.PerContainer(name, default=0, group=f"{name}.other")  # another group is fine
    assert other.group == f"{name}.other"


def test_default_and_factory_is_refused(pc: ModuleType, name: str) -> None:
    with pytest.raises(TypeError, match="default"):
        pc.PerContainer(name, default=0, factory=int)
    var = pc.PerContainer(name, group=f"{name}.g")  # the name was not registered
    assert var.group == f"{name}.g"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, ValueError),
        ({"name": 5}, TypeError),
        ({"name": None}, TypeError),
        ({"group": ""}, ValueError),
        ({"group": 5}, TypeError),
        ({"factory": 5}, TypeError),
        ({"on_exit": "print"}, TypeError),
    ],
)
def test_bad_declaration(pc: ModuleType, name: str, kwargs: dict[str, Any], error: type) -> None:
    args = {"name": name, **kwargs}
    var_name = args.pop("name")
    with pytest.raises(error):
        pc.PerContainer(var_name, **args)
    if isinstance(var_name, str) and var_name:  # the name was not registered
        var = pc.PerContainer(var_name, default=1, group=f"{name}.fresh")
        assert var.group == f"{name}.fresh"


def test_keyword_only(pc: ModuleType, name: str) -> None:
    with pytest.raises(TypeError):
        pc.PerContainer(name, 0)


# -- get / set / value / add / reset -------------------------------------------------------
def test_set_get_value_in_host(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    var.set(5)
    assert var.get() == 5
    var.value = 6
    assert var.value == 6
    assert var.of(pc.host) == 6
    assert var.items() == [(pc.host, 6)]
    var.reset()
    assert var.get() == 0
    assert var.items() == []


def test_add(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=10)
    try:
        assert var.add() == 11
        assert var.add(5) == 16
        assert var.add(-20) == -4
        assert var.get() == -4
        assert var.add(0.5) == -3.5
    finally:
        var.reset()


def test_add_on_sequences(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=())
    try:
        assert var.add((1,)) == (1,)
        assert var.add((2,)) == (1, 2)
    finally:
        var.reset()


def test_add_type_error_leaves_value(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default="text")
    with pytest.raises(TypeError):
        var.add(1)
    assert var.items() == []  # nothing stored
    var.set("abc")
    with pytest.raises(TypeError):
        var.add(1)
    assert var.get() == "abc"
    var.reset()


def test_unset_without_default_raises_lookup_error(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name)
    c = new()
    pattern = re.escape(repr(name))
    with pytest.raises(LookupError, match=pattern):
        var.get()
    with pytest.raises(LookupError, match=pattern):
        var.value  # noqa: B018
    with pytest.raises(LookupError, match=pattern):
        var.of(c)
    with pytest.raises(LookupError, match=pattern):
        c.run(var.get)
    with pytest.raises(LookupError, match=pattern):
        var.add(1)
    assert var.items() == []
    c.run(var.set, 3)
    assert var.of(c) == 3
    c.run(var.reset)
    with pytest.raises(LookupError, match=pattern):
        var.of(c)


def test_reset_when_unset_is_harmless(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=1)
    c = new()
    c.run(var.reset)
    var.reset()
    assert var.of(c) == 1


def test_of_does_not_enter(pc: ModuleType, new: New, name: str) -> None:
    seen = []
    var = pc.PerContainer(name, factory=lambda: seen.append(pc.current()) or len(seen))
    c = new()
    assert var.of(c) == 1
    assert pc.current() is pc.host
    assert seen == [c if pc.ENABLED else pc.host]  # the factory ran in the owner


@pytest.mark.parametrize("bad", [None, 0, "host"])
def test_of_takes_a_container(pc: ModuleType, name: str, bad: object) -> None:
    var = pc.PerContainer(name, default=0)
    with pytest.raises(TypeError):
        var.of(bad)


# -- isolation -----------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_values_are_isolated(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    a, b = new("a"), new("b")
    with a:
        var.set(1)
        assert var.add(10) == 11
    with b:
        assert var.get() == 0
        var.value = 2
    assert var.get() == 0  # host untouched
    assert (var.of(a), var.of(b), var.of(pc.host)) == (11, 2, 0)
    a.run(var.reset)
    assert (var.of(a), var.of(b)) == (0, 2)


@pytest.mark.enabled_only
def test_child_does_not_inherit_values(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name)
    parent = new()
    parent.run(var.set, "parent")
    child = new(parent=parent)
    with pytest.raises(LookupError):
        var.of(child)


@pytest.mark.enabled_only
def test_items_and_sum(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    a, b, c = new("a"), new("b"), new("c")
    assert var.items() == [] and var.sum() == 0
    a.run(var.set, 2)
    c.run(var.add, 5)
    assert dict(var.items()) == {a: 2, c: 5}
    assert var.items() == [(a, 2), (c, 5)]  # creation order
    assert var.sum() == 7
    b.run(var.add, 0.5)
    assert var.sum() == 7.5
    c.close()
    assert dict(var.items()) == {a: 2, b: 0.5}
    assert var.sum() == 2.5
    a.run(var.reset)
    assert var.items() == [(b, 0.5)]


# -- factories -----------------------------------------------------------------------------
def test_factory_is_lazy_and_runs_once_per_container(pc: ModuleType, new: New, name: str) -> None:
    made: list[Any] = []

    def factory() -> Box:
        box = Box(pc.current())
        made.append(box)
        return box

    var = pc.PerContainer(name, factory=factory)
    a, b = new("a"), new("b")
    assert made == []  # lazy: nothing at declaration
    first = a.run(var.get)
    assert a.run(var.get) is first
    assert var.of(a) is first
    assert first.payload is (a if pc.ENABLED else pc.host)  # ran inside the owner
    second = var.of(b)
    if pc.ENABLED:
        assert second is not first and second.payload is b
        assert len(made) == 2
        assert dict(var.items()) == {a: first, b: second}
    else:
        assert second is first and len(made) == 1
    # reset makes it run again
    a.run(var.reset)
    third = var.of(a)
    assert third is not first
    assert len(made) == (3 if pc.ENABLED else 2)
    assert len(var.items()) == (2 if pc.ENABLED else 1)


def test_factory_value_can_be_mutated_in_place(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, factory=list)
    a, b = new(), new()
    a.run(lambda: var.get().append("a"))
    b.run(lambda: var.get().append("b"))
    if pc.ENABLED:
        assert (var.of(a), var.of(b)) == (["a"], ["b"])
    else:
        assert var.of(a) == ["a", "b"]
        var.reset()


def test_factory_used_by_add(pc: ModuleType, new: New, name: str) -> None:
    calls = []
    var = pc.PerContainer(name, factory=lambda: calls.append(1) or 100)
    c = new()
    assert c.run(var.add, 5) == 105
    assert c.run(var.add, 5) == 110
    assert calls == [1]
    if not pc.ENABLED:
        var.reset()


def test_factory_error_propagates_and_leaves_unset(pc: ModuleType, new: New, name: str) -> None:
    calls = []

    def factory() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("first call fails")
        return 42

    var = pc.PerContainer(name, factory=factory)
    c = new()
    with pytest.raises(KeyError):
        var.of(c)
    assert var.items() == []
    assert var.of(c) == 42  # retried
    assert calls == [1, 1]
    if not pc.ENABLED:
        var.reset()


def test_factory_reading_itself_raises(pc: ModuleType, new: New, name: str) -> None:
    var: Any = None

    def factory() -> int:
        return var.get() + 1

    var = pc.PerContainer(name, factory=factory)
    c = new()

    def attempt() -> None:  # in a thread, so that a deadlock fails the test instead of hanging
        with pytest.raises(pc.ContainerError, match=re.escape(name)):
            var.of(c)
        assert var.items() == []
        with pytest.raises(pc.ContainerError):  # raises again, does not hang
            c.run(var.get)

    run_threads([attempt], timeout=10)
    c.run(var.set, 1)  # the variable is still usable
    assert var.of(c) == 1
    if not pc.ENABLED:
        var.reset()


def test_factory_cycle_between_two_variables_raises(pc: ModuleType, new: New, name: str) -> None:
    a: Any = None
    b: Any = None
    a = pc.PerContainer(f"{name}.a", factory=lambda: b.get())
    b = pc.PerContainer(f"{name}.b", factory=lambda: a.get())
    c = new()

    def attempt() -> None:
        with pytest.raises(pc.ContainerError):
            a.of(c)

    run_threads([attempt], timeout=10)
    assert a.items() == [] and b.items() == []


def test_factory_may_read_other_variables(pc: ModuleType, new: New, name: str) -> None:
    base = pc.PerContainer(f"{name}.base", default=3)
    derived = pc.PerContainer(f"{name}.derived", factory=lambda: base.get() * 2)
    c = new()
    c.run(base.set, 5)
    assert derived.of(c) == 10
    if not pc.ENABLED:
        base.reset()
        derived.reset()


# -- sharing -------------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_shared_group_reads_and_writes_the_parent(pc: ModuleType, new: New, name: str) -> None:
    shared = pc.PerContainer(f"{name}.s", default=0, group=f"{name}.g")
    own = pc.PerContainer(f"{name}.o", default=0)
    parent = new("parent")
    child = new("child", parent=parent, share=[f"{name}.g"])
    with child:
        shared.set(5)
        own.set(7)
        assert shared.add(1) == 6
    assert shared.of(parent) == 6 and shared.of(child) == 6
    assert own.of(parent) == 0 and own.of(child) == 7
    parent.run(shared.set, 9)
    assert child.run(shared.get) == 9
    child.run(shared.reset)
    assert shared.of(parent) == 0
    # items counts the storage, not the sharers
    parent.run(shared.set, 4)
    assert shared.items() == [(parent, 4)]
    assert shared.sum() == 4
    assert dict(own.items()) == {child: 7}


@pytest.mark.enabled_only
def test_sharing_is_recursive(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    top = new("top")
    middle = new("middle", parent=top, share=[f"{name}.g"])
    bottom = new("bottom", parent=middle, share=[f"{name}.g"])
    unshared = new("unshared", parent=middle)
    bottom.run(var.set, 3)
    assert var.of(top) == 3 and var.of(middle) == 3 and var.of(bottom) == 3
    assert var.of(unshared) == 0
    unshared.run(var.set, 1)
    assert var.items() == [(top, 3), (unshared, 1)]
    assert var.sum() == 4


@pytest.mark.enabled_only
def test_sharing_stops_at_a_non_sharing_parent(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    top = new("top")
    middle = new("middle", parent=top)
    bottom = new("bottom", parent=middle, share=[f"{name}.g"])
    bottom.run(var.set, 3)
    assert (var.of(top), var.of(middle), var.of(bottom)) == (0, 3, 3)
    assert var.items() == [(middle, 3)]


@pytest.mark.enabled_only
def test_sharing_with_the_host(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    c = new(share=[f"{name}.g"])
    try:
        c.run(var.set, 8)
        assert var.get() == 8
        assert var.items() == [(pc.host, 8)]
    finally:
        var.reset()


@pytest.mark.enabled_only
def test_shared_factory_runs_once_in_the_owner(pc: ModuleType, new: New, name: str) -> None:
    runs: list[Any] = []
    var = pc.PerContainer(name, factory=lambda: runs.append(pc.current()) or Box(), group=f"{name}.g")
    parent = new()
    one = new(parent=parent, share=[f"{name}.g"])
    two = new(parent=parent, share=[f"{name}.g"])
    assert one.run(var.get) is two.run(var.get) is var.of(parent)
    assert runs == [parent]


@pytest.mark.enabled_only
def test_shared_unset_lookup_error_names_variable(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, group=f"{name}.g")
    child = new(share=[f"{name}.g"], parent=new())
    with pytest.raises(LookupError, match=re.escape(repr(name))):
        child.run(var.get)


# -- redeclaration -------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_redeclaration_binds_the_same_slot(pc: ModuleType, new: New, name: str) -> None:
    first = pc.PerContainer(name, default=0)
    c = new()
    c.run(first.set, 5)
    second = pc.PerContainer(name, default=1)
    assert second.of(c) == 5
    assert first.of(pc.host) == 1 and second.of(pc.host) == 1  # the new spec applies to both
    c.run(second.add, 1)
    assert first.of(c) == 6
    assert first.items() == second.items() == [(c, 6)]


def test_redeclaration_in_another_group_is_refused(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0, group=f"{name}.g")
    c = new()
    c.run(var.set, 5)
    with pytest.raises(ValueError, match=re.escape(f"{name}.g")):
        pc.PerContainer(name, default=99, group=f"{name}.other")
    assert var.group == f"{name}.g"
    assert var.of(c) == 5
    c.run(var.reset)
    assert var.of(c) == 0  # the refused declaration did not change the default
    with pytest.raises(ValueError):  # nor make its group known
        new(share=[f"{name}.other"])
    with pytest.raises(ValueError):  # the default group is another group too
        pc.PerContainer(name, default=0)
    assert var.group == f"{name}.g"


def test_bad_redeclaration_keeps_spec(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=3)
    with pytest.raises(TypeError):
        pc.PerContainer(name, default=[])
    with pytest.raises(TypeError):
        pc.PerContainer(name, default=1, factory=int)
    with pytest.raises(TypeError):
        pc.PerContainer(name, factory=5)
    assert var.get() == 3


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


def test_reload_keeps_values(pc: ModuleType, new: New, name: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    modname = f"pc_reload_{pc.__name__.rsplit('_', 1)[-1]}_{uuid.uuid4().hex}"
    source = tmp_path / f"{modname}.py"
    template = """
        import {twin} as m

        counter = m.PerContainer({counter!r}, default={default})

        @m.per_container
        def session():
            return {{"version": {default}}}

        hooks = []
        closing = m.PerContainer({closing!r}, default=0, on_exit=lambda v: hooks.append(({default}, v)))
    """
    fill = {"twin": pc.__name__, "counter": f"{name}.counter", "closing": f"{name}.closing"}
    _write(source, template.format(default=1, **fill))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        module = importlib.import_module(modname)
        old_counter, old_session = module.counter, module.session
        assert old_session.name == f"{modname}.session"
        c = new()
        with c:
            module.counter.set(42)
            made = module.session.get()
            module.closing.set(7)
        assert made == {"version": 1}

        _write(source, template.format(default=2, **fill))
        importlib.reload(module)
        assert module.counter is not old_counter
        assert module.counter.of(c) == 42
        assert old_counter.of(c) == 42
        assert module.session.of(c) is made  # same slot, the factory did not run again
        assert module.session.name == old_session.name
        if pc.ENABLED:
            assert module.counter.of(pc.host) == 2  # the new default applies
            assert old_counter.of(pc.host) == 2
            assert module.session.of(new()) == {"version": 2}  # and the new factory
        c.run(module.counter.add, 1)
        assert old_counter.of(c) == 43
        new_hooks = module.hooks
        c.close()
        if pc.ENABLED:
            assert new_hooks == [(2, 7)]  # the new on_exit hook ran, once
    finally:
        sys.modules.pop(modname, None)


# -- @per_container ------------------------------------------------------------------------
def test_per_container_bare(pc: ModuleType, new: New) -> None:
    calls = []

    @pc.per_container
    def session() -> dict[str, int]:
        calls.append(pc.current())
        return {"n": len(calls)}

    assert isinstance(session, pc.PerContainer)
    assert session.name == f"{session_module()}.test_per_container_bare.<locals>.session"
    assert session.group == "default"
    c = new()
    assert calls == []
    assert session.of(c) == {"n": 1}
    assert c.run(session.get) is session.of(c)
    assert calls == [c if pc.ENABLED else pc.host]
    if not pc.ENABLED:
        session.reset()


def session_module() -> str:
    return __name__


def test_per_container_with_arguments(pc: ModuleType, new: New, name: str) -> None:
    closed: list[Any] = []

    @pc.per_container(name=name, group=f"{name}.g", on_exit=closed.append)
    def session() -> Box:
        return Box("s")

    assert (session.name, session.group) == (name, f"{name}.g")
    c = new()
    value = c.run(session.get)
    c.close()
    assert closed == ([value] if pc.ENABLED else [])
    if not pc.ENABLED:
        session.reset()


def test_per_container_empty_call(pc: ModuleType) -> None:
    @pc.per_container()
    def thing() -> int:
        return 1

    assert thing.name.endswith("test_per_container_empty_call.<locals>.thing")
    assert thing.get() == 1
    thing.reset()


def test_per_container_bad_input(pc: ModuleType, name: str) -> None:
    with pytest.raises(TypeError):
        pc.per_container(5)
    with pytest.raises(TypeError):
        pc.per_container(name=name)(5)
    with pytest.raises(ValueError):
        pc.per_container(name="")(int)
    with pytest.raises(TypeError):
        pc.per_container(name=5)(int)
    with pytest.raises(TypeError):
        pc.per_container(name=name, on_exit=5)(int)
    with pytest.raises(ValueError):
        pc.per_container(name=name, group="")(int)
    # nothing was registered under the name
    var = pc.PerContainer(name, default=0, group=f"{name}.fresh")
    assert var.group == f"{name}.fresh"


def test_per_container_without_qualname_needs_a_name(pc: ModuleType, name: str) -> None:
    """A callable with no __qualname__ (a functools.partial) cannot name the variable itself.

    Bad input must give a clear error (TypeError/ValueError saying to pass name=), not an
    AttributeError from inside the decorator; with name= it works.
    """
    factory = functools.partial(dict, a=1)
    with pytest.raises((TypeError, ValueError), match="name"):
        pc.per_container(factory)
    var = pc.per_container(name=name)(factory)
    assert var.get() == {"a": 1}
    var.reset()


# -- garbage collection --------------------------------------------------------------------
def test_collected_variable_frees_its_values_everywhere(pc: ModuleType, new: New, name: str) -> None:
    var: Any = pc.PerContainer(name)
    a, b = new(), new()
    boxes = [Box("host"), Box("a"), Box("b")]
    refs = [weakref.ref(box) for box in boxes]
    var.set(boxes[0])
    a.run(var.set, boxes[1])
    b.run(var.set, boxes[2])
    del boxes
    # (disabled: every container writes the host's storage, so only the last value is held)
    assert sum(ref() is not None for ref in refs) == (3 if pc.ENABLED else 1)
    del var
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    # The name is free again: redeclaring starts empty, in any group.
    again = pc.PerContainer(name, group=f"{name}.g")
    for where in (pc.host, a, b):
        with pytest.raises(LookupError):
            again.of(where)
    assert again.items() == []


@pytest.mark.slow
def test_collected_variable_slot_reuse_sees_no_stale_value(pc: ModuleType, new: New, name: str) -> None:
    c = new()
    for i in range(50):
        var: Any = pc.PerContainer(f"{name}.{i}")
        with pytest.raises(LookupError):
            var.of(c)
        with pytest.raises(LookupError):
            var.get()
        assert var.items() == []
        c.run(var.set, i)
        var.set(-i)
        del var
        gc.collect()


def test_variable_in_reference_cycle_is_collected(pc: ModuleType, new: New, name: str) -> None:
    class Service:
        def __init__(self) -> None:
            self.var = pc.PerContainer(name, factory=self.make)

        def make(self) -> Box:
            return Box("made")

    service: Any = Service()
    c = new()
    value = service.var.of(c)
    value_ref, service_ref = weakref.ref(value), weakref.ref(service)
    del value, service
    gc.collect()
    assert service_ref() is None
    assert value_ref() is None


# -- add() never changes an int someone else holds ------------------------------------------
ADD_SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
_deltas = st.one_of(st.integers(-3, 3), st.integers(1, 2**30), st.integers(-(2**70), 2**70),
                    st.just(2**30 - 1), st.just(True))


def test_add_arithmetic_matches_python_ints(pc: ModuleType, new: New, name: str) -> None:
    """Random add() sequences: results exact, and every kept result/reading keeps its value."""
    var = pc.PerContainer(name, default=0)
    c = new()

    @ADD_SETTINGS
    @given(start=st.integers(-(2**40), 2**40) | st.integers(257, 2**30 - 1),
           steps=st.lists(st.tuples(_deltas, st.sampled_from(["drop", "keep", "read"])),
                          max_size=60))
    def check(start: int, steps: list[tuple[int, str]]) -> None:
        kept: list[tuple[int, int]] = []
        with c:
            var.set(int(str(start)))  # a fresh int only the area holds
            expected = start
            for delta, what in steps:
                expected += delta
                if what == "keep":
                    kept.append((var.add(delta), expected))
                elif what == "read":
                    var.add(delta)
                    kept.append((var.get(), expected))
                else:
                    var.add(delta)  # result dropped: the area may be the only holder
                assert var.get() == expected
            for value, value_then in kept:
                assert value == value_then
            assert var.of(c) == expected
            var.reset()

    check()


def test_add_does_not_change_values_held_elsewhere(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    other = pc.PerContainer(f"{name}.other", default=0)
    a, b = new("a"), new("b")
    if pc.ENABLED:
        shared_int = int("1000001")  # one object, stored in two containers and two variables
        a.run(var.set, shared_int)
        b.run(var.set, shared_int)
        a.run(other.set, shared_int)
        del shared_int
        assert a.run(var.add, 1) == 1000002
        assert var.of(b) == 1000001
        assert other.of(a) == 1000001
    # snapshots taken by of(), items() and get() keep their values
    fresh = int("2000000")
    b.run(var.set, fresh)
    del fresh
    snapshot = [value for _, value in var.items() if value >= 2000000]
    read = var.of(b)
    got = b.run(var.get)
    in_dict = {var.of(b): "key"}
    b.run(var.add, 7)
    assert read == 2000000 and got == 2000000
    assert snapshot == [2000000]
    assert list(in_dict) == [2000000] and in_dict[2000000] == "key"
    assert var.of(b) == 2000007
    del read, got, snapshot, in_dict
    b.run(var.add, 1)  # nothing else holds it now
    assert var.of(b) == 2000008


def test_add_respects_int_subclasses_and_bools(pc: ModuleType, new: New, name: str) -> None:
    class Odd(int):
        def __add__(self, other: object) -> Odd:
            return Odd(int(self) + int(other) + 100)  # type: ignore[call-overload]

    var = pc.PerContainer(name, default=0)
    c = new()
    with c:
        var.set(Odd(1000))
        result = var.add(1)
        assert type(result) is Odd and result == 1101
        var.set(True)
        assert var.add(True) == 2
        assert True + 0 == 1 and int("1") is not None  # the bool singleton is intact
        var.set(int("5000"))
        assert var.add(0.5) == 5000.5
        var.reset()
