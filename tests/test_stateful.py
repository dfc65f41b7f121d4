"""A hypothesis state machine drives each twin against a plain-Python model of the semantics.

Random sequences of create (child of current, of the host or of any container, maybe sharing
groups) / enter / exit / mis-nested exit / set / get / add / reset / of / close, comparing
every result, containers(), current(), items(), sum(), exit hooks and factory calls.

The pc fixture cannot parametrize a unittest.TestCase, so each twin gets its own machine class
built by make_machine(module); the compiled twin is skipped under PERCONTAINER_NO_EXTENSIONS.
"""

from __future__ import annotations

import importlib
import unittest
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from percontainer import _config, _core_py

SETTINGS = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,  # the same sequences every run: a failure reproduces
    database=None,  # write nothing outside tests/
    suppress_health_check=[HealthCheck.too_slow],
)

LIVE, CLOSING, DEAD = "live", "closing", "dead"
NO_DEFAULT = object()
FACTORY = object()
MAX_DEPTH = 6


class ModelContainer:
    def __init__(self, real: Any, parent: ModelContainer | None, shared: frozenset[str]) -> None:
        self.real = real
        self.parent = parent
        self.shared = shared
        self.state = LIVE
        self.users = 0
        self.children: list[ModelContainer] = []
        self.store: dict[int, Any] = {}

    def __repr__(self) -> str:
        return f"Model({self.real!r}, {self.state})"


class Outcome:
    """What the model expects an operation to do: return a value or raise."""

    def __init__(self, value: Any = None, error: type[BaseException] | None = None) -> None:
        self.value = value
        self.error = error


def make_machine(m: ModuleType, twin: str) -> type[RuleBasedStateMachine]:
    prefix = f"tests.stateful.{twin}"
    group1, group2 = f"{prefix}.g1", f"{prefix}.g2"
    shares = [(), (group1,), (group2,), (group1, group2), ("default",)]
    enabled = m.ENABLED
    # variable index -> (group, default kind)
    specs: list[tuple[str, Any]] = [
        ("default", 0),
        (group1, 0),
        (group1, NO_DEFAULT),
        (group2, FACTORY),
    ]

    class PerContainerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.hook_calls: list[tuple[int, Any, Any]] = []
            self.factory_calls: list[Any] = []
            self.factory_count = 0
            self.expected_factory: list[Any] = []

            def hook(index: int) -> Any:
                return lambda value: self.hook_calls.append((index, value, m.current()))

            def factory() -> int:
                self.factory_count += 1
                self.factory_calls.append(m.current())
                return 1000 + self.factory_count

            # Same names every run: redeclaring binds the same slots and takes these hooks.
            self.vars = [
                m.PerContainer(f"{prefix}.v0", default=0, on_exit=hook(0)),
                m.PerContainer(f"{prefix}.v1", default=0, group=group1, on_exit=hook(1)),
                m.PerContainer(f"{prefix}.v2", group=group1, on_exit=hook(2)),
                m.PerContainer(f"{prefix}.v3", factory=factory, group=group2, on_exit=hook(3)),
            ]
            assert m.current() is m.host
            for var in self.vars:
                var.reset()  # the host outlives every run
            self.host = ModelContainer(m.host, None, frozenset())
            self.all: list[ModelContainer] = [self.host]
            self.stack: list[ModelContainer] = []
            self.model_factory_count = 0

        # -- the model ------------------------------------------------------------------------
        def current(self) -> ModelContainer:
            return self.stack[-1] if enabled and self.stack else self.host

        def pick(self, index: int) -> ModelContainer:
            return self.all[index % len(self.all)]

        def owner(self, container: ModelContainer, var: int) -> ModelContainer:
            if not enabled:
                return self.host
            group = specs[var][0]
            while group in container.shared:
                assert container.parent is not None
                container = container.parent
            return container

        def by_real(self, real: Any) -> ModelContainer:
            for container in self.all:
                if container.real is real:
                    return container
            raise AssertionError(f"unknown container {real!r}")

        def run_factory(self, owner: ModelContainer, var: int) -> Any:
            self.model_factory_count += 1
            value = 1000 + self.model_factory_count
            owner.store[var] = value
            self.expected_factory.append(owner.real if enabled else m.host)
            return value

        def model_read(self, container: ModelContainer, var: int) -> Outcome:
            owner = self.owner(container, var)
            if container.state == DEAD or owner.state == DEAD:
                return Outcome(error=m.ContainerClosedError)
            if var in owner.store:
                return Outcome(owner.store[var])
            default = specs[var][1]
            if default is FACTORY:
                return Outcome(self.run_factory(owner, var))
            if default is NO_DEFAULT:
                return Outcome(error=LookupError)
            return Outcome(default)

        def model_teardown(self, container: ModelContainer) -> list[tuple[int, Any, Any]]:
            events = [(var, container.store[var], container.real if enabled else m.host)
                      for var in sorted(container.store, reverse=True)]
            container.state = DEAD
            container.store = {}
            return events

        def model_close(self, container: ModelContainer) -> list[tuple[int, Any, Any]]:
            if container.state != LIVE:
                return []
            container.state = CLOSING
            events: list[tuple[int, Any, Any]] = []
            for child in list(container.children):
                events += self.model_close(child)
            assert container.parent is not None
            container.parent.children.remove(container)
            if container.users == 0:
                events += self.model_teardown(container)
            return events

        def check(self, outcome: Outcome, call: Any, *args: Any) -> Any:
            if outcome.error is not None:
                try:
                    result = call(*args)
                except outcome.error:
                    return None
                raise AssertionError(f"expected {outcome.error.__name__}, got {result!r}")
            result = call(*args)
            assert result == outcome.value, (result, outcome.value)
            return result

        def check_factory_calls(self) -> None:
            assert self.factory_calls == self.expected_factory
            assert self.factory_count == self.model_factory_count

        def check_hooks(self, expected: list[tuple[int, Any, Any]]) -> None:
            actual, self.hook_calls = self.hook_calls, []
            assert sorted(actual, key=repr) == sorted(expected, key=repr), (actual, expected)
            if not enabled:
                return
            # Each container's hooks run in reverse declaration order...
            for container in {id(where): where for _, _, where in expected}.values():
                mine = [call for call in actual if call[2] is container]
                assert mine == [call for call in expected if call[2] is container]
            # ...and a descendant's before its ancestors'.
            position: dict[int, int] = {}
            for index, (_, _, where) in enumerate(actual):
                position[id(where)] = index
            for _, _, where in actual:
                ancestor = self.by_real(where).parent
                while ancestor is not None:
                    if id(ancestor.real) in position:
                        assert position[id(where)] < position[id(ancestor.real)]
                    ancestor = ancestor.parent

        # -- rules --------------------------------------------------------------------------
        @rule(parent=st.sampled_from(["current", "host", "any"]), index=st.integers(0, 50),
              share=st.sampled_from(shares), label=st.sampled_from([None, "t"]))
        def create(self, parent: str, index: int, share: tuple[str, ...], label: str | None) -> None:
            before = m.containers()
            if parent == "current":
                expected_parent = self.current()
                make = lambda: m.Container(label, share=share)
            else:
                expected_parent = self.host if parent == "host" else self.pick(index)
                make = lambda: m.Container(label, parent=expected_parent.real, share=share)
            if expected_parent.state != LIVE:
                try:
                    made = make()
                except m.ContainerClosedError:
                    assert m.containers() == before
                    return
                raise AssertionError(f"created {made!r} in closed {expected_parent!r}")
            real = make()
            assert real.parent is expected_parent.real
            assert real.shared == frozenset(share)
            assert real.name == label
            assert not real.closed
            assert all(real.id > c.real.id for c in self.all)
            container = ModelContainer(real, expected_parent, frozenset(share))
            expected_parent.children.append(container)
            self.all.append(container)

        @precondition(lambda self: len(self.stack) < MAX_DEPTH)
        @rule(index=st.integers(0, 50))
        def enter(self, index: int) -> None:
            container = self.pick(index)
            if container.state != LIVE:
                try:
                    container.real.__enter__()
                except m.ContainerClosedError:
                    return
                raise AssertionError(f"entered closed {container!r}")
            assert container.real.__enter__() is container.real
            self.stack.append(container)
            if enabled:
                container.users += 1

        @precondition(lambda self: bool(self.stack))
        @rule()
        def exit(self) -> None:
            container = self.stack.pop()
            container.real.__exit__(None, None, None)
            expected: list[tuple[int, Any, Any]] = []
            if enabled:
                container.users -= 1
                if container.users == 0 and container.state == CLOSING:
                    expected = self.model_teardown(container)
            self.check_hooks(expected)

        @rule(index=st.integers(0, 50))
        def exit_wrong_container(self, index: int) -> None:
            container = self.pick(index)
            if self.stack and self.stack[-1] is container:
                return
            if enabled:
                try:
                    container.real.__exit__(None, None, None)
                except m.ContainerError:
                    return
                raise AssertionError(f"exited {container!r} while {self.current()!r} is current")
            container.real.__exit__(None, None, None)  # disabled: a no-op

        @rule(var=st.integers(0, 3), value=st.integers(-5, 100))
        def set(self, var: int, value: int) -> None:
            owner = self.owner(self.current(), var)
            if owner.state == DEAD:
                self.check(Outcome(error=m.ContainerClosedError), self.vars[var].set, value)
            else:
                self.vars[var].set(value)
                owner.store[var] = value

        @rule(var=st.integers(0, 3))
        def get(self, var: int) -> None:
            outcome = self.model_read(self.current(), var)
            self.check(outcome, self.vars[var].get)
            self.check_factory_calls()

        @rule(var=st.integers(0, 3), index=st.integers(0, 50))
        def of(self, var: int, index: int) -> None:
            container = self.pick(index)
            outcome = self.model_read(container, var)
            self.check(outcome, self.vars[var].of, container.real)
            self.check_factory_calls()

        @rule(var=st.integers(0, 3), delta=st.integers(-3, 3))
        def add(self, var: int, delta: int) -> None:
            owner = self.owner(self.current(), var)
            outcome = self.model_read(owner, var)
            if outcome.error is None:
                owner.store[var] = outcome.value + delta
                outcome = Outcome(outcome.value + delta)
            self.check(outcome, self.vars[var].add, delta)
            self.check_factory_calls()

        @rule(var=st.integers(0, 3))
        def reset(self, var: int) -> None:
            owner = self.owner(self.current(), var)
            if owner.state == DEAD:
                self.check(Outcome(error=m.ContainerClosedError), self.vars[var].reset)
            else:
                self.vars[var].reset()
                owner.store.pop(var, None)

        @rule(index=st.integers(0, 50))
        def close(self, index: int) -> None:
            container = self.pick(index)
            if container is self.host:
                before = m.containers()
                self.check(Outcome(error=m.ContainerError), m.host.close)
                assert m.containers() == before
                return
            expected = self.model_close(container)
            container.real.close()
            assert container.real.closed
            self.check_hooks(expected)

        # -- invariants ---------------------------------------------------------------------
        @invariant()
        def registry_matches(self) -> None:
            assert m.containers() == [c.real for c in self.all if c.state == LIVE]
            assert m.current() is self.current().real
            for container in self.all:
                assert container.real.closed == (container.state != LIVE)
            assert self.hook_calls == []

        @invariant()
        def items_and_sum_match(self) -> None:
            for index, var in enumerate(self.vars):
                expected = [(c.real, c.store[index]) for c in self.all
                            if c.state == LIVE and index in c.store]
                assert var.items() == expected
                assert var.sum() == sum(value for _, value in expected)

        def teardown(self) -> None:
            for container in reversed(self.stack):
                container.real.__exit__(None, None, None)
            self.stack.clear()
            for container in reversed(self.all):
                if container is not self.host and not container.real.closed:
                    container.real.close()
            for var in self.vars:
                var.reset()
            assert m.current() is m.host

    PerContainerMachine.__name__ = PerContainerMachine.__qualname__ = f"Machine_{twin}"
    return PerContainerMachine


# -- one TestCase per twin -------------------------------------------------------------------
TestStatefulPy = make_machine(_core_py, "py").TestCase
TestStatefulPy.settings = SETTINGS


def _compiled_testcase() -> type[unittest.TestCase]:
    if _config.NO_EXTENSIONS:
        class Skipped(unittest.TestCase):
            @unittest.skip("PERCONTAINER_NO_EXTENSIONS is set: the compiled core is not under test")
            def runTest(self) -> None:  # pragma: no cover
                pass

        return Skipped
    try:
        core_c = importlib.import_module("percontainer._core_c")
    except ImportError as error:  # a missing build is a failure, as in conftest
        message = f"the compiled core does not import: {error}"

        class Missing(unittest.TestCase):
            def runTest(self) -> None:
                self.fail(message)

        return Missing
    testcase = make_machine(core_c, "c").TestCase
    testcase.settings = SETTINGS
    return testcase


TestStatefulC = _compiled_testcase()
