"""Typed variables stay consistent and memory-safe whatever runs meanwhile (issue 9): reductions
racing container churn, record padding, conversions with side effects, re-entrant growth."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from _pc_helpers import run_threads, switch_often

New = Callable[..., Any]
TESTS = Path(__file__).resolve().parent


def _run_isolated(pc: ModuleType, code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh interpreter with `pc` bound to the core under test, and fail if it
    does not exit cleanly. For what can crash the interpreter on a defect: a crash fails the
    test, not the suite."""
    script = f"import importlib\npc = importlib.import_module({pc.__name__!r})\n"
    script += textwrap.dedent(code)
    package_root = Path(pc.__file__).resolve().parent.parent  # the build under test
    environment = {**os.environ,
                   "PYTHONPATH": os.pathsep.join([str(package_root), str(TESTS)])}
    result = subprocess.run([sys.executable, "-X", "faulthandler", "-c", script], cwd=TESTS,
                            env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"exit code {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


# -- 3. reductions see one state of every container -------------------------------------------
def _pause() -> None:
    """A Python call: a point where the thread can be switched out (C calls are not)."""


def _churn(pc: ModuleType, var: Any, value: Any, stop: list[bool], ring: int = 8) -> None:
    """Create containers that set `value`, and close them (some while still inside, so their
    rows are held until the exit), until `stop` is set; at most `ring` open at a time."""
    open_: list[Any] = []
    try:
        for _ in range(100_000):  # bounded: the reducer stops it long before
            if stop:
                break
            c = pc.Container()
            _pause()
            with c:
                var.set(value)
                _pause()
            open_.append(c)
            if len(open_) > ring:
                old = open_.pop(0)
                with old:
                    old.close()  # closed, not torn down until the exit: a held row
                    _pause()
                _pause()
    finally:
        for c in open_:
            c.close()


def _race(pc: ModuleType, var: Any, value: Any, check: Callable[[], None],
          workers: int = 3, checks: int = 150) -> None:
    """Run `check` over and over while `workers` threads churn containers."""
    stop: list[bool] = []

    def reduce() -> None:
        try:
            for _ in range(checks):
                check()
        finally:
            stop.append(True)

    with switch_often():
        run_threads([lambda: _churn(pc, var, value, stop) for _ in range(workers)] + [reduce])


@pytest.mark.enabled_only
def test_reductions_racing_churn_see_one_state(pc: ModuleType, name: str) -> None:
    """Every container holds exactly 1 (its default, written with its row): whatever containers
    come and go, a sum counts containers, the mean is 1.0, and no reduction sees a 0 (a row
    torn down or reused meanwhile) or raises for a container closed meanwhile."""
    var = pc.PerContainer(name, dtype=np.int64, default=1, group=f"{name}.g")
    baseline = len(pc.containers())
    most = baseline + 3 * 10  # each worker: a ring of 8, one new, one closed but in use

    def check() -> None:
        assert baseline <= var.sum() <= most
        assert var.mean() == 1.0
        assert var.min() == 1 and var.max() == 1
        values = var.values()
        assert baseline <= len(values) <= most and values.tolist() == [1] * len(values)
        assert all(value == 1 for _, value in var.items())

    _race(pc, var, 1, check)
    assert var.sum() == baseline and var.values().tolist() == [1] * baseline


@pytest.mark.enabled_only
def test_array_reductions_racing_churn_see_one_state(pc: ModuleType, name: str) -> None:
    """The same for an array variable (chunked storage): every copy is [1, 2]."""
    var = pc.PerContainer(name, dtype=np.int32, shape=2, default=[1, 2], group=f"{name}.g")
    baseline = len(pc.containers())
    most = baseline + 3 * 10

    def check() -> None:
        ones, twos = var.sum().tolist()
        assert twos == 2 * ones and baseline <= ones <= most
        assert var.mean().tolist() == [1.0, 2.0]
        assert var.min().tolist() == [1, 2] and var.max().tolist() == [1, 2]
        assert all(row == [1, 2] for row in var.values().tolist())
        # A view reads zeros once its container is torn down (maybe since items() returned):
        # read first, then look whether it was closed.
        assert all(value.tolist() == [1, 2] or c.closed for c, value in var.items())

    _race(pc, var, [1, 2], check)
    assert var.sum().tolist() == [baseline, 2 * baseline]


@pytest.mark.enabled_only  # disabled, items() lists the host alone
def test_items_skip_containers_closed_meanwhile(pc: ModuleType, new: New, name: str) -> None:
    """items() leaves out a container closed between its listing and its read, as it does for
    object variables: here a gc callback closes one container per collection while items()
    makes each container's view (which allocates)."""
    var = pc.PerContainer(name, dtype=np.int64, shape=2, default=[5, 6])
    victims = [new() for _ in range(8)]
    pending = list(victims)

    def close_one(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and pending:
            pending.pop().close()

    threshold = gc.get_threshold()
    gc.callbacks.append(close_one)
    gc.set_threshold(1)
    try:
        pairs = var.items()
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(close_one)
    # From 3.12 a gc pass starts only between bytecodes, of which the compiled items() runs
    # few: some victims may outlive it, but one closed inside it is needed to prove anything.
    assert len(pending) < len(victims), "no collection ran during items(): the test proves nothing"
    # A container closed after its read holds a view that reads zeros now.
    assert all(value.tolist() == [5, 6] or c.closed for c, value in pairs)
    assert {c for c, _ in pairs} >= {c for c in victims if not c.closed}


# -- 5. record gaps hold zeros, not heap bytes -------------------------------------------------
GAPPED = [
    np.dtype({"names": ["a", "b"], "formats": ["u1", "i8"], "offsets": [0, 8], "itemsize": 16}),
    np.dtype([("a", "u1"), ("b", "i4"), ("c", "u2"), ("d", "f8")], align=True),
    np.dtype({"names": ["a"], "formats": [("i2", 3)], "offsets": [2], "itemsize": 12}),
]


def _dirty_heap(size: int) -> None:
    """Leave freed blocks full of 0xAB where numpy allocates next."""
    junk = [np.full(size, 0xAB, np.uint8) for _ in range(64)]
    del junk


def _raw(view: Any) -> bytes:
    """The bytes of a container's row, gaps included (a view's memory, not a copy's)."""
    return bytes(view.reshape(-1).view(np.uint8))


def _record(dtype: np.dtype[Any], shape: tuple[int, ...], base: int) -> tuple[Any, bytes]:
    """A value to store, and the bytes a row holding it must have: gaps zero."""
    value = tuple(np.full(dtype.fields[f][0].shape, base + i).tolist()  # type: ignore[index]
                  for i, f in enumerate(dtype.names or ()))
    expected = np.zeros(shape, dtype)
    for i, field in enumerate(dtype.names or ()):  # field by field: gaps stay zero
        expected[field] = base + i
    return value, expected.tobytes()


@pytest.mark.parametrize("shape", [(), (3,)], ids=["one", "array"])
@pytest.mark.parametrize("dtype", GAPPED, ids=["offsets", "aligned", "subarray"])
def test_record_gaps_are_zero(pc: ModuleType, new: New, name: str, dtype: np.dtype[Any],
                              shape: tuple[int, ...]) -> None:
    size = dtype.itemsize * max(1, int(np.prod(shape)))
    default, default_bytes = _record(dtype, shape, 1)
    _dirty_heap(size)
    var = pc.PerContainer(name, dtype=dtype, shape=shape, default=default)
    c = new()
    with c:
        assert _raw(var.get()) == default_bytes  # the default, copied into a new row
        value, value_bytes = _record(dtype, shape, 10)
        _dirty_heap(size)
        var.set(value)
        assert _raw(var.get()) == value_bytes
        _dirty_heap(size)
        var.set(np.array(value, dtype))  # an array of the record dtype, made with dirty gaps
        assert _raw(var.get()) == value_bytes
        var.reset()
        assert _raw(var.get()) == default_bytes


# -- 7. a conversion's side effects never write through a stale cell -----------------------------
_CONVERSIONS = """
import numpy as np
counter = pc.PerContainer("counter", dtype=np.int64)
small = pc.PerContainer("small", dtype=np.int16)
wide = pc.PerContainer("wide", dtype=np.uint64)
real = pc.PerContainer("real", dtype=np.float64)
single = pc.PerContainer("single", dtype=np.float32)
made = []

def grow():
    '''What a hostile __index__ does: create containers until the typed storage grows.'''
    made.extend(pc.Container() for _ in range(300))

class Late:
    '''Returned by __index__: not an int, compares as one, and its own __index__ grows.'''
    def __index__(self):
        grow()
        return 7
    __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: True

class Early:
    def __index__(self):
        return Late()

class Grows:
    '''An int-like and float-like whose conversion grows the storage, then answers.'''
    def __init__(self, value):
        self.value = value
    def __index__(self):
        grow()
        return self.value
    def __float__(self):
        grow()
        return float(self.value)

c = pc.Container()
with c:
    for var in (counter, small, wide):
        var.set(3)
        for call in (var.set, var.add):
            try:
                call(Early())
            except TypeError as error:
                assert "non-int" in str(error), error
            else:
                raise AssertionError(f"{var.name}.{call.__name__}(Early()) took a non-int")
            assert var.get() == 3, (var.name, var.get())
        var.set(Grows(5))
        assert var.get() == 5, (var.name, var.get())
        assert var.add(Grows(2)) == 7 and var.get() == 7, (var.name, var.get())
    for var in (real, single):
        var.set(Grows(5))
        assert var.get() == 5.0, (var.name, var.get())
        assert var.add(Grows(2)) == 7.0 and var.get() == 7.0, (var.name, var.get())
assert made, "no container was made: the test proves nothing"
assert counter.sum() == 7 and wide.sum() == 7 and real.sum() == 7.0
for container in made:
    assert counter.of(container) == 0 and real.of(container) == 0.0
    container.close()
c.close()
print("ok")
"""


@pytest.mark.enabled_only  # disabled, containers take no typed storage: nothing grows
def test_conversion_side_effects_never_write_a_stale_cell(pc: ModuleType) -> None:
    """An __index__ (or __float__) that creates containers moves the storage: set() and add()
    convert first, with int() and float() semantics (an __index__ returning a non-int is a
    TypeError naming it), and only then find the cell. In a subprocess: on a defect the
    compiled core writes freed memory."""
    assert _run_isolated(pc, _CONVERSIONS).stdout.strip() == "ok"


# -- 8. growth is re-entrant ----------------------------------------------------------------
_GROWTH = """
import gc, os, traceback
import numpy as np

def scenario(action, skip, offset):
    '''Grow the storage with a gc callback that, at its `skip`th collection, creates enough
    containers to grow it twice more (and drops or declares a variable): a finalizer's work
    landing inside the growth. Return whether the callback ran.'''
    doomed = [pc.PerContainer("doomed", dtype=np.int64, default=3)]
    scalar = pc.PerContainer("scalar", dtype=np.int64)
    array = pc.PerContainer("array", dtype=np.int64, shape=2)
    late, made, armed, errors = [], [], [None], []

    def new():
        c = pc.Container()
        with c:
            scalar.set(c.id)
            array.set([c.id, -c.id])
        made.append(c)

    def nested(phase, info):
        if phase != "start" or armed[0] is None:
            return
        if armed[0]:
            armed[0] -= 1
            return
        armed[0] = None
        try:
            if action == "drop":
                doomed.clear()  # its column goes while the columns grow
            elif action == "declare":
                late.append(pc.PerContainer("late", dtype=np.int32, default=5))
            for _ in range(130):  # from row 64 past row 192: two growths
                new()
        except BaseException as error:  # gc would only report it
            errors.append(error)

    while len(made) < 63:  # rows 0 (the host) to 63: the next container grows the storage
        new()
    gc.callbacks.append(nested)
    gc.collect()
    armed[0] = skip
    gc.set_threshold(1)
    junk = [[] for _ in range(offset)]  # shifts where the collections fall
    new()
    gc.set_threshold(700)
    fired = armed[0] is None
    armed[0] = None
    assert not errors, errors
    ids = [c.id for c in made]
    assert scalar.sum() == sum(ids), (scalar.sum(), sum(ids))
    assert len(scalar.values()) == len(made) + 1
    assert all(scalar.of(c) == c.id for c in made)
    assert array.sum().tolist() == [sum(ids), -sum(ids)]
    assert all(array.of(c).tolist() == [c.id, -c.id] for c in made)
    for var, value in [(v, 3) for v in doomed] + [(v, 5) for v in late]:
        assert var.sum() == value * (len(made) + 1)
        assert all(var.of(c) == value for c in made)
    return fired

results = {}
for action in ("create", "declare", "drop"):
    for skip in range(8):
        for offset in range(2):
            pid = os.fork()  # each scenario in a fresh state: the growth at row 64
            if pid == 0:
                try:
                    code = 0 if scenario(action, skip, offset) else 3
                except BaseException:
                    traceback.print_exc()
                    code = 1
                os._exit(code)
            results[action, skip, offset] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(results)
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the scenarios run in forked children")
@pytest.mark.enabled_only  # disabled, containers take no typed storage: nothing grows
def test_growth_reentered_by_a_finalizer(pc: ModuleType) -> None:
    """A gc callback (or __del__) that creates containers, declares or drops a variable while
    the typed storage grows: every column ends the size of the storage, nothing written is
    lost, no memory past an array is touched. In a subprocess: a defect corrupts the heap."""
    run = _run_isolated(pc, _GROWTH)
    results = eval(run.stdout.strip().splitlines()[-1])  # noqa: S307  # the dict printed
    failed = {scenario: code for scenario, code in results.items() if code not in (0, 3)}
    assert not failed, f"scenarios failed (1: an error, < 0: a signal): {failed}\n{run.stderr}"
    for action in ("create", "declare", "drop"):
        assert any(results[action, skip, offset] == 0 for skip in range(8) for offset in range(2)), \
            f"no collection came during a growth for {action!r}: the test proves nothing"


# -- add() is atomic on every path ---------------------------------------------------------------
def test_add_beyond_64_bits_loses_no_concurrent_add(pc: ModuleType, new: New, name: str) -> None:
    """A delta beyond int64 takes add()'s slow path (Python ints): another thread's add()
    meanwhile is not overwritten."""
    var = pc.PerContainer(name, dtype=np.uint64)
    c = new()
    rounds = 1000

    def big() -> None:
        with c:
            for _ in range(rounds):
                var.add(2**63)  # beyond int64: the slow path
                var.add(-(2**63))

    def small() -> None:
        with c:
            for _ in range(10 * rounds):
                var.add(1)

    with switch_often():
        run_threads([big, small])
    assert var.of(c) == 10 * rounds


_TORN = """
import numpy as np
from _pc_helpers import run_threads, switch_often
# Large enough that numpy may let other threads run while it copies a row.
var = pc.PerContainer("big", dtype=np.float64, shape=200_000)
c = pc.Container()

def add():
    with c:
        for _ in range(150):
            var.add(1)

def reduce():
    for _ in range(150):
        total = var.sum()
        assert (total == total[0]).all(), "a sum saw half an add"

with switch_often():
    run_threads([add, reduce])
assert var.of(c).tolist() == [150.0] * 200_000
c.close()
print("ok")
"""


@pytest.mark.enabled_only
def test_array_add_is_seen_whole(pc: ModuleType) -> None:
    """A reduction racing an array add() sees the row before or after the add, never part
    of it. In a subprocess: its rows are large, and a fresh process holds few."""
    assert _run_isolated(pc, _TORN).stdout.strip() == "ok"


# -- twin parity -----------------------------------------------------------------------------
def test_reset_of_a_bool_restores_its_default(pc: ModuleType, new: New, name: str) -> None:
    flag = pc.PerContainer(name, dtype=np.bool_, default=True)
    plain = pc.PerContainer(f"{name}.plain", dtype=bool)
    with new():
        flag.set(False)
        plain.set(True)
        flag.reset()
        plain.reset()
        assert flag.get() is True and plain.get() is False


def test_float32_add_returns_the_stored_value(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.float32)
    with new():
        result = var.add(0.1)
        assert result == float(np.float32(0.1)) == var.get()
        assert var.add(0.2) == var.get() == float(np.float32(float(np.float32(0.1)) + 0.2))


@pytest.mark.enabled_only
def test_views_of_one_row_dying_in_many_threads_lose_no_lease(pc: ModuleType, name: str) -> None:
    """Views of several array variables of one container, dropped by several threads at once:
    each lease is counted and uncounted once (no KeyError from a weakref callback), and the
    row of a torn-down container is never reused while a view of it lives."""
    import random
    import sys

    from _pc_helpers import run_threads, switch_often

    import time

    from percontainer._typed import Leases

    def widen(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is Leases._dropped.__code__:
            time.sleep(0.0001)
            return widen
        return None

    variables = [pc.PerContainer(f"{name}.{k}", dtype="int64", shape=(4,)) for k in range(6)]
    unraisable: list[Any] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        for round_ in range(30):
            c = pc.Container()
            with c:
                for k, var in enumerate(variables):
                    var.set([round_, k, 0, 0])
            held = [var.of(c)[:] for var in variables] * 2
            c.close()  # torn down: its row waits for the views above
            fresh = pc.Container()  # must not get c's row while a view of it lives
            stale = [view.copy() for view in held]
            assert all(int(view[0]) in (round_, 0) for view in held)
            random.Random(round_).shuffle(held)
            halves = [held[::2], held[1::2]]
            del held

            def drop(views: list[Any]) -> None:
                sys.settrace(widen)  # every line of a lease's callback lets the other run
                try:
                    while views:
                        views.pop()
                finally:
                    sys.settrace(None)

            with switch_often():
                run_threads([lambda v=half: drop(v) for half in halves])
            with fresh:
                assert all(int(var.get()[0]) == 0 for var in variables)  # fresh starts at zeros
            fresh.close()
            del stale
    finally:
        sys.unraisablehook = old_hook
    assert unraisable == []
