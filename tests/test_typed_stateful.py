"""Typed variables' values(), reductions and closing, and a state machine against a dict model.

Reductions are checked against a Python reference over random containers (hypothesis) and on
chosen edge values (exact sums beyond the int64 range). The hypothesis tests run inside a test
that takes the `pc` fixture, so each twin gets its own run. Every example declares fresh variable
names (a redeclared name would keep the host's values) and closes the containers it made before
the next example starts.
"""

from __future__ import annotations

import gc
import itertools
import math
import threading
from collections.abc import Callable
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
New = Callable[..., Any]


# -- reductions against a Python reference -------------------------------------------------
REDUCE_DTYPES = ["int8", "int64", "uint8", "float64"]


def _elements(dtype: str) -> st.SearchStrategy[Any]:
    if dtype == "float64":  # bounded, so that summation order changes the sum by < 1e-6
        return st.floats(-1e6, 1e6, allow_nan=False)
    info = np.iinfo(dtype)
    return st.integers(int(info.min), int(info.max))


@st.composite
def _plans(draw: st.DrawFn) -> tuple[str, Any, list[tuple[int | None, bool, Any, bool, bool]]]:
    """A dtype, the host's value, and per container: parent index, shares, value, closed, and
    whether the value is written by add() (ints only) rather than set()."""
    dtype = draw(st.sampled_from(REDUCE_DTYPES))
    elements = _elements(dtype)
    specs = []
    for i in range(draw(st.integers(0, 30))):
        parent = draw(st.none() | st.integers(0, i - 1)) if i else None
        specs.append((parent, draw(st.booleans()), draw(elements), draw(st.integers(0, 3)) == 0,
                      dtype != "float64" and draw(st.booleans())))
    return dtype, draw(elements), specs


def test_reductions_match_a_python_reference(pc: ModuleType, name: str) -> None:
    """values/items/sum/min/max/mean over random containers, some closed, some sharing."""
    group = f"{name}.g"

    @SETTINGS
    @given(plan=_plans())
    def check(plan: tuple[str, Any, list[tuple[int | None, bool, Any, bool, bool]]]) -> None:
        dtype, host_value, specs = plan
        var = pc.PerContainer(f"{name}.{next(_serial)}", dtype=dtype, group=group)
        made: list[Any] = []
        owner: dict[Any, Any] = {}  # container -> the container whose storage it uses
        try:
            var.set(host_value)
            store = {pc.host: host_value}
            for parent, shares, value, _, by_add in specs:
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
                if by_add:
                    assert c.run(var.add, value - store[owner[c]]) == value
                else:
                    c.run(var.set, value)
                store[owner[c]] = value
            for c, (_, _, _, closed, _) in zip(made, specs):
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
            exact = math.fsum(reference) if dtype == "float64" else sum(reference)  # int: exact
            assert var.mean() == pytest.approx(exact / len(reference), rel=1e-12, abs=1e-6)
            assert type(var.mean()) is float
        finally:
            for c in reversed(made):
                c.close()
            var.reset()

    check()


# -- reductions on chosen values ----------------------------------------------------------
@pytest.mark.enabled_only
def test_scalar_reductions(pc: ModuleType, new: New, name: str) -> None:
    """Exact Python ints beyond the int64 range, bool counts and extremes, float means."""
    var, unsigned = (pc.PerContainer(f"{name}.{t}", dtype=t) for t in ("int64", "uint64"))
    flag = pc.PerContainer(f"{name}.flag", dtype=bool)
    rate = pc.PerContainer(f"{name}.rate", dtype=np.float32, default=0.5)
    top, top_u = 2**63 - 1, 2**64 - 1
    cs = [new() for _ in range(3)]
    for c in cs:
        c.run(var.set, top)
        c.run(unsigned.set, top_u)
        c.run(flag.set, True)
    cs[0].run(rate.set, 2.0)
    n = len(pc.containers())  # every live container stores
    assert var.sum() == 3 * top and type(var.sum()) is int
    assert unsigned.sum() == 3 * top_u and type(unsigned.sum()) is int
    assert var.min() == 0 and var.max() == top and type(var.max()) is int
    assert unsigned.mean() == pytest.approx(3 * top_u / n) and type(unsigned.mean()) is float
    assert var.items() == [(c, 0) for c in pc.containers() if c not in cs] + [(c, top) for c in cs]
    assert flag.sum() == 3 and type(flag.sum()) is int and flag.mean() == pytest.approx(3 / n)
    assert flag.max() is True and flag.min() is False
    assert rate.sum() == pytest.approx(0.5 * (n - 1) + 2.0) and type(rate.sum()) is float
    assert rate.max() == 2.0 and rate.min() == 0.5 and type(rate.min()) is float


@pytest.mark.enabled_only
def test_sums_stay_exact_when_counters_grow_by_add(pc: ModuleType, new: New, name: str) -> None:
    """Counters that reach the edges of their range through add() alone still sum exactly."""
    var, unsigned = (pc.PerContainer(f"{name}.{t}", dtype=t) for t in ("int64", "uint64"))
    cs = [new() for _ in range(4)]
    for c in cs:
        with c:
            for _ in range(2):
                var.add(2**62 - 1)
                unsigned.add(2**63 - 1)
            var.add(1)
            unsigned.add(1)
    assert [var.of(c) for c in cs] == [2**63 - 1] * 4
    assert [unsigned.of(c) for c in cs] == [2**64 - 1] * 4
    assert var.sum() == 4 * (2**63 - 1) and unsigned.sum() == 4 * (2**64 - 1)
    for c in cs:
        c.run(var.add, -(2**63 - 1) - 2**63)  # down to the minimum
    assert var.sum() == -4 * 2**63 and var.min() == -(2**63)
    assert var.mean() == pytest.approx(-4 * 2**63 / len(pc.containers()))


@pytest.mark.enabled_only
def test_array_reductions(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int32, shape=3)
    for k, c in enumerate([new() for _ in range(5)]):
        c.run(var.set, [k, -k, 2 * k])
    rows = var.values()
    assert rows.shape == (len(pc.containers()), 3) and rows.dtype == np.int32
    for method, reference in [(var.sum, rows.sum(axis=0)), (var.min, rows.min(axis=0)),
                              (var.max, rows.max(axis=0))]:
        got = method()
        assert isinstance(got, np.ndarray) and got.shape == (3,)
        assert got.tolist() == reference.tolist()
    assert var.mean() == pytest.approx(rows.mean(axis=0))
    assert var.mean().dtype.kind == "f"


# -- closing: rows zeroed, recycled, never seen through a stale view --------------------------
@pytest.mark.enabled_only
def test_closed_row_is_recycled_with_defaults(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int64, default=7)
    arr = pc.PerContainer(f"{name}.arr", dtype=np.float64, shape=2)
    before = len(var.values())
    for round_ in range(50):
        c = pc.Container()
        c.run(var.set, 5)
        c.run(arr.set, [1.0, 2.0])
        assert len(var.values()) == before + 1
        c.close()
        assert len(var.values()) == before and len(arr.values()) == before
        assert 5 not in var.values().tolist()
        d = pc.Container()
        try:
            assert var.of(d) == 7 and arr.of(d).tolist() == [0.0, 0.0], f"round {round_}"
            assert var.items()[-1] == (d, 7)
        finally:
            d.close()


@pytest.mark.enabled_only
def test_stale_view_reads_zeros_and_reaches_no_one(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int64, shape=4, default=3)
    c = pc.Container()
    view = c.run(var.get)
    view[:] = 9
    c.close()
    assert view.tolist() == [0, 0, 0, 0]
    others = [pc.Container() for _ in range(50)]
    try:
        for k, other in enumerate(others):
            other.run(var.set, 100 + k)
        assert view.tolist() == [0, 0, 0, 0]  # no new tenant's data shows through
        view[:] = 12345
        rows = var.values()
        assert not (rows == 12345).any()
        for method in ("sum", "min", "max"):  # the reductions do not see the stale row either
            assert getattr(var, method)().tolist() == getattr(rows, method)(axis=0).tolist()
        assert var.mean() == pytest.approx(rows.mean(axis=0))
        for k, other in enumerate(others):
            assert var.of(other).tolist() == [100 + k] * 4
        assert var.get().tolist() == [3] * 4
        del view, rows
        gc.collect()  # the row is free again: whoever gets it starts at the default
        others += [pc.Container() for _ in range(50)]
        assert all(var.of(other).tolist() == [3] * 4 for other in others[50:])
    finally:
        for other in others:
            other.close()


@pytest.mark.enabled_only
def test_close_leaves_values_at_once_while_in_use(pc: ModuleType, new: New, name: str) -> None:
    """A thread still inside the closed container, even one writing to it, changes nothing."""
    var = pc.PerContainer(name, dtype=np.int64)
    c = new()
    c.run(var.set, 4)
    inside, closed, wrote, release = (threading.Event() for _ in range(4))

    def worker() -> None:
        with c:
            inside.set()
            closed.wait(30)
            try:
                var.set(1000)
            except pc.ContainerError:
                pass
            wrote.set()
            release.wait(30)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        assert inside.wait(30)
        count = len(var.values())
        c.close()
        assert len(var.values()) == count - 1
        assert c not in [k for k, _ in var.items()]
        closed.set()
        assert wrote.wait(30)
        rows = var.values().tolist()
        assert len(rows) == count - 1 and 4 not in rows and 1000 not in rows
        assert var.sum() == sum(rows) and var.max() == max(rows) and var.min() == min(rows)
        assert var.mean() == pytest.approx(sum(rows) / len(rows))
    finally:
        release.set()
        thread.join(30)
    assert all(var.of(new()) == 0 for _ in range(10))  # the row came back zeroed


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


@pytest.mark.slow
def test_typed_state_machine(pc: ModuleType, name: str) -> None:
    machine = make_machine(pc, name)
    run_state_machine_as_test(machine, settings=settings(SETTINGS, max_examples=80,
                                                         stateful_step_count=40))
