"""Hypothesis tests of typed variables: reductions against a Python reference, and a state machine.

Both run inside a test that takes the `pc` fixture, so each twin gets its own run. Every example
declares fresh variable names (a redeclared name would keep the host's values) and closes the
containers it made before the next example starts.
"""

from __future__ import annotations

import itertools
import math
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    database=None,  # write nothing outside tests/
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
_serial = itertools.count()


# -- reductions against a Python reference -------------------------------------------------
REDUCE_DTYPES = ["int8", "int64", "uint8", "float64"]


def _elements(dtype: str) -> st.SearchStrategy[Any]:
    if dtype == "float64":  # bounded, so that summation order changes the sum by < 1e-6
        return st.floats(-1e6, 1e6, allow_nan=False)
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def _plans(draw: st.DrawFn) -> tuple[str, Any, list[tuple[int | None, bool, Any, bool]]]:
    """A dtype, the host's value, and per container: parent index, shares, value, closed."""
    dtype = draw(st.sampled_from(REDUCE_DTYPES))
    elements = _elements(dtype)
    specs = []
    for i in range(draw(st.integers(0, 30))):
        parent = draw(st.none() | st.integers(0, i - 1)) if i else None
        specs.append((parent, draw(st.booleans()), draw(elements), draw(st.integers(0, 3)) == 0))
    return dtype, draw(elements), specs


def test_reductions_match_a_python_reference(pc: ModuleType, name: str) -> None:
    """values/items/sum/min/max/mean over random containers, some closed, some sharing."""
    group = f"{name}.g"

    @SETTINGS
    @given(plan=_plans())
    def check(plan: tuple[str, Any, list[tuple[int | None, bool, Any, bool]]]) -> None:
        dtype, host_value, specs = plan
        var = pc.PerContainer(f"{name}.{next(_serial)}", dtype=dtype, group=group)
        made: list[Any] = []
        owner: dict[Any, Any] = {}  # container -> the container whose storage it uses
        try:
            var.set(host_value)
            store = {pc.host: host_value}
            for parent, shares, value, _ in specs:
                parent_c = pc.host if parent is None else made[parent]
                c = pc.Container(parent=parent_c, share={group} if shares else ())
                made.append(c)
                if not pc.ENABLED:
                    owner[c] = pc.host
                elif shares:
                    owner[c] = owner.get(parent_c, parent_c)
                else:
                    owner[c] = c
                    store[c] = 0
                c.run(var.set, value)
                store[owner[c]] = value
            for c, (_, _, _, closed) in zip(made, specs):
                if closed:
                    c.close()  # closes its descendants too
            storing = [c for c in pc.containers() if owner.get(c, c) is c]
            if not pc.ENABLED:
                assert storing == [pc.host]
            reference = [store.get(c, 0) for c in storing]  # a container made elsewhere: 0

            values = var.values()
            assert values.dtype == np.dtype(dtype) and values.shape == (len(reference),)
            assert values.tolist() == reference
            assert var.items() == list(zip(storing, reference))
            if dtype == "float64":
                assert var.sum() == pytest.approx(math.fsum(reference), abs=1e-6)
                assert type(var.sum()) is float
            else:
                assert var.sum() == sum(reference) and type(var.sum()) is int
            assert var.min() == min(reference) and var.max() == max(reference)
            assert type(var.min()) is type(var.max()) is (float if dtype == "float64" else int)
            assert var.mean() == pytest.approx(math.fsum(reference) / len(reference), abs=1e-6)
            assert type(var.mean()) is float
        finally:
            for c in reversed(made):
                c.close()
            var.reset()

    check()


# -- a state machine against a dict model ------------------------------------------------
DEFAULT_N = 3
DEFAULT_A = (0.5, 0.0, -1.0)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_ints = st.integers(-5, 5) | st.sampled_from([INT64_MAX, INT64_MIN, 2**62, -(2**62)])
_quarters = st.integers(-400, 400).map(lambda k: k / 4)  # exact in binary: sums are exact
_rows = st.tuples(_quarters, _quarters, _quarters) | _quarters


def make_machine(pc: ModuleType, name: str) -> type[RuleBasedStateMachine]:
    enabled = pc.ENABLED

    class TypedMachine(RuleBasedStateMachine):
        """Model: the live containers, who owns whose storage, and each storage's values."""

        made = Bundle("made")

        def __init__(self) -> None:
            super().__init__()
            serial = next(_serial)
            self.group = f"{name}.{serial}.g"
            self.n = pc.PerContainer(f"{name}.{serial}.n", dtype=np.int64, default=DEFAULT_N,
                                     group=self.group)
            self.a = pc.PerContainer(f"{name}.{serial}.a", dtype=np.float64, shape=3,
                                     default=DEFAULT_A, group=self.group)
            self.parent: dict[Any, Any] = {}
            self.shares: dict[Any, bool] = {}
            self.live: list[Any] = []  # creation order
            self.store: dict[Any, dict[str, Any]] = {pc.host: self._defaults()}
            self.views: dict[Any, np.ndarray] = {}  # a kept view per storing container
            self.dead_views: list[np.ndarray] = []
            self.entered: list[Any] = []
            self.views[pc.host] = self.a.get()

        @staticmethod
        def _defaults() -> dict[str, Any]:
            return {"n": DEFAULT_N, "a": list(DEFAULT_A)}

        def owner(self, c: Any) -> Any:
            if not enabled:
                return pc.host
            while c is not pc.host and self.shares[c]:
                c = self.parent[c]
            return c

        def current(self) -> Any:
            return self.entered[-1] if self.entered else pc.host

        # -- containers --
        @rule(target=made, parent=st.integers(0, 99), shares=st.booleans(),
              under_current=st.booleans())
        def create(self, parent: int, shares: bool, under_current: bool) -> Any:
            share = {self.group} if shares else ()
            if under_current or not self.live:  # the parent defaults to the current container
                p = self.current() if enabled else pc.host
                c = pc.Container(share=share)
            else:
                p = self.live[parent % len(self.live)]
                c = pc.Container(parent=p, share=share)
            assert c.parent is p
            self.parent[c], self.shares[c] = c.parent, shares
            self.live.append(c)
            if self.owner(c) is c:
                self.store[c] = self._defaults()
                self.views[c] = c.run(self.a.get)
            return c

        @rule(c=made)
        def enter(self, c: Any) -> None:
            if c in self.live:
                c.__enter__()
                self.entered.append(c)

        @precondition(lambda self: self.entered)
        @rule()
        def leave(self) -> None:
            self.entered.pop().__exit__(None, None, None)

        @rule(c=consumes(made))
        def close(self, c: Any) -> None:
            if c not in self.live:
                return
            doomed = {c} | {d for d in self.live if self._descends(d, c)}
            if doomed & set(self.entered):
                return  # closing an entered container defers its teardown: not modelled here
            c.close()
            for d in doomed:
                self.live.remove(d)
                self.store.pop(d, None)
                view = self.views.pop(d, None)
                if view is not None:
                    self.dead_views.append(view)

        def _descends(self, d: Any, c: Any) -> bool:
            while d is not pc.host:
                d = self.parent[d]
                if d is c:
                    return True
            return False

        # -- values --
        def _target(self, index: int) -> Any:
            """A live container, or None for the current container."""
            return None if not self.live or index < 0 else self.live[index % len(self.live)]

        def _apply(self, target: Any, fn: Any, *args: Any) -> Any:
            return fn(*args) if target is None else target.run(fn, *args)

        @rule(index=st.integers(-1, 99), value=_ints)
        def set_n(self, index: int, value: int) -> None:
            target = self._target(index)
            self._apply(target, self.n.set, value)
            self.store[self.owner(self.current() if target is None else target)]["n"] = value

        @rule(index=st.integers(-1, 99), delta=_ints)
        def add_n(self, index: int, delta: int) -> None:
            target = self._target(index)
            row = self.store[self.owner(self.current() if target is None else target)]
            if INT64_MIN <= row["n"] + delta <= INT64_MAX:
                assert self._apply(target, self.n.add, delta) == row["n"] + delta
                row["n"] += delta
            else:
                with pytest.raises(OverflowError):
                    self._apply(target, self.n.add, delta)

        @rule(index=st.integers(-1, 99), value=_rows, add=st.booleans())
        def write_a(self, index: int, value: Any, add: bool) -> None:
            target = self._target(index)
            row = self.store[self.owner(self.current() if target is None else target)]
            given_ = list(value) if isinstance(value, tuple) else [value] * 3
            result = self._apply(target, self.a.add if add else self.a.set, value)
            row["a"] = [x + y for x, y in zip(row["a"], given_)] if add else given_
            if add:
                assert result.tolist() == row["a"]

        @rule(index=st.integers(-1, 99))
        def reset(self, index: int) -> None:
            target = self._target(index)
            self._apply(target, self.n.reset)
            self._apply(target, self.a.reset)
            self.store[self.owner(self.current() if target is None else target)] = self._defaults()

        # -- checks --
        @invariant()
        def reads_match(self) -> None:
            if enabled:
                assert pc.current() is self.current()
            for c in [pc.host, *self.live]:
                row = self.store[self.owner(c)]
                got = self.n.of(c)
                assert got == row["n"] and type(got) is int
                assert self.a.of(c).tolist() == row["a"]
            for c, view in self.views.items():
                assert view.tolist() == self.store[c]["a"]
            for view in self.dead_views:
                assert view.tolist() == [0.0, 0.0, 0.0]

        @invariant()
        def values_match(self) -> None:
            storing = [c for c in pc.containers() if c in self.store]
            assert len(self.n.values()) == len(storing) == len(self.store)
            reference = [self.store[c]["n"] for c in storing]
            assert self.n.values().tolist() == reference
            assert self.n.sum() == sum(reference) and type(self.n.sum()) is int
            assert self.n.items() == list(zip(storing, reference))
            rows = [self.store[c]["a"] for c in storing]
            assert self.a.values().tolist() == rows
            assert self.a.sum().tolist() == [math.fsum(col) for col in zip(*rows)]

        def teardown(self) -> None:
            while self.entered:
                self.entered.pop().__exit__(None, None, None)
            for c in reversed(self.live):
                c.close()
            self.n.reset()
            self.a.reset()

    return TypedMachine


def test_typed_state_machine(pc: ModuleType, name: str) -> None:
    machine = make_machine(pc, name)
    run_state_machine_as_test(machine, settings=settings(SETTINGS, max_examples=80,
                                                         stateful_step_count=40))
