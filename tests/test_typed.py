"""Typed per-container variables (dtype=): numpy storage, conversions, views, reductions."""

from __future__ import annotations

import asyncio
import contextvars
import operator
import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from _pc_helpers import run_threads, switch_often

New = Callable[..., Any]

INT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOAT_DTYPES = ["float32", "float64"]
SCALAR_DTYPES = ["bool", *INT_DTYPES, *FLOAT_DTYPES]
REC = np.dtype([("a", "i4"), ("b", "f8")])
PLAIN = {"b": bool, "i": int, "u": int, "f": float}  # dtype kind -> the Python type get() returns


def _storing(pc: ModuleType) -> list[Any]:
    """The containers that own storage, when no container shares the variable's group."""
    return list(pc.containers()) if pc.ENABLED else [pc.host]


def _row(pc: ModuleType, var: Any, container: Any) -> Any:
    """The row of values() that holds `container`'s copy (the host's in disabled mode)."""
    rows = var.values()
    storing = _storing(pc)
    assert len(rows) == len(storing)
    return rows[storing.index(container if pc.ENABLED else pc.host)]


class _Index:
    """An int-like that is not an int: operator.index() accepts it."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


# -- declaration -----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "expected"), [
    (np.int64, "int64"), ("int8", "int8"), (np.dtype("u2"), "uint16"), (int, "int64"),
    (float, "float64"), (bool, "bool"), ("f4", "float32"), (REC, REC),
])
def test_attributes(pc: ModuleType, name: str, spec: Any, expected: Any) -> None:
    var = pc.PerContainer(name, dtype=spec, group=f"{name}.g")
    assert isinstance(var.dtype, np.dtype) and var.dtype == np.dtype(expected)
    assert var.shape == ()
    assert (var.name, var.group) == (name, f"{name}.g")
    assert pc.PerContainer(f"{name}.obj", default=0).dtype is None


@pytest.mark.parametrize(("shape", "expected"),
                         [(3, (3,)), ((3,), (3,)), ((2, 3), (2, 3)), ((), ())])
def test_shape_attribute(pc: ModuleType, name: str, shape: Any, expected: tuple[int, ...]) -> None:
    var = pc.PerContainer(name, dtype=np.float64, shape=shape)
    assert var.shape == expected and type(var.shape) is tuple


@pytest.mark.parametrize("dtype", [
    np.float16, np.complex64, np.complex128, object, "U5", "S3", "M8[s]", "m8[s]", ">i4",
    np.dtype([("a", "i4"), ("b", "f2")]), np.dtype([("a", "U3")]), np.dtype([("a", "O")]),
    np.dtype([("a", ">i4")]), np.dtype([("a", [("x", "i4")])]), "V8", "nonsense",
], ids=repr)
def test_unsupported_dtype_is_refused(pc: ModuleType, name: str, dtype: Any) -> None:
    with pytest.raises(TypeError) as info:
        pc.PerContainer(name, dtype=dtype)
    message = str(info.value)
    for supported in ("bool", "int8", "uint64", "float32", "float64"):
        assert supported in message
    var = pc.PerContainer(name, dtype=np.int8)  # the name was not registered
    assert var.dtype == np.int8


@pytest.mark.parametrize(("shape", "error"), [
    (0, ValueError), (-1, ValueError), ((2, 0), ValueError), ((3, -2), ValueError),
    (2.0, TypeError), ((2.5,), TypeError), ("3", TypeError), ((None,), TypeError),
])
def test_bad_shape(pc: ModuleType, name: str, shape: Any, error: type) -> None:
    with pytest.raises(error):
        pc.PerContainer(name, dtype=np.int64, shape=shape)


@pytest.mark.parametrize("kwargs", [{"shape": 3}, {"shape": (2,)}, {"shape": 3, "default": 0}])
def test_shape_without_dtype_is_refused(pc: ModuleType, name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        pc.PerContainer(name, **kwargs)


@pytest.mark.parametrize("kwargs", [{"factory": int}, {"on_exit": print}])
def test_factory_or_on_exit_with_dtype_is_refused(pc: ModuleType, name: str,
                                                  kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        pc.PerContainer(name, dtype=np.int64, **kwargs)
    assert pc.PerContainer(name, default=0).dtype is None  # the name was not registered


@pytest.mark.parametrize(("dtype", "shape", "default", "error"), [
    ("int8", (), 128, OverflowError), ("uint8", (), -1, OverflowError),
    ("int64", (), 2**63, OverflowError), ("float32", (), 1e300, OverflowError),
    ("int32", (), 1.5, TypeError), ("int32", (), "1", TypeError), ("float64", (), "x", TypeError),
    ("float64", (), None, TypeError), ("bool", (), 1, TypeError),
    ("int8", (2,), [1, 300], OverflowError), ("int64", (2,), [1.5, 2.0], TypeError),
])
def test_bad_default(pc: ModuleType, name: str, dtype: str, shape: Any, default: Any,
                     error: type) -> None:
    with pytest.raises(error):
        pc.PerContainer(name, dtype=dtype, shape=shape, default=default)
    assert pc.PerContainer(name, default=0).dtype is None  # the name was not registered


def test_defaults(pc: ModuleType, new: New, name: str) -> None:
    """Zero unless given; a list or array default is converted (not refused as mutable)."""
    zero = pc.PerContainer(f"{name}.zero", dtype=np.float32)
    seven = pc.PerContainer(f"{name}.seven", dtype=np.uint8, default=7)
    listed = pc.PerContainer(f"{name}.list", dtype=np.int16, shape=3, default=[1, 2, 3])
    source = np.arange(4.0)
    arrayed = pc.PerContainer(f"{name}.array", dtype=np.float64, shape=(2, 4), default=source)
    rec = pc.PerContainer(f"{name}.rec", dtype=REC, default=(3, 0.5))
    source[:] = -1  # the default was copied
    c = new()
    assert zero.of(c) == 0.0 and type(zero.of(c)) is float
    assert seven.of(c) == 7 and type(seven.get()) is int
    assert listed.of(c).tolist() == [1, 2, 3]
    assert arrayed.of(c).tolist() == [[0.0, 1.0, 2.0, 3.0]] * 2
    assert rec.of(c).item() == (3, 0.5)


def test_redeclaration_binds_the_same_storage(pc: ModuleType, new: New, name: str) -> None:
    first = pc.PerContainer(name, dtype=np.int64, shape=2, group=f"{name}.g")
    c = new()
    c.run(first.set, [5, 6])
    second = pc.PerContainer(name, dtype=np.int64, shape=(2,), group=f"{name}.g")
    assert second.of(c).tolist() == [5, 6]
    assert np.shares_memory(second.of(c), first.of(c))
    c.run(second.set, [6, 7])
    assert first.of(c).tolist() == [6, 7]


@pytest.mark.parametrize("kwargs", [
    {"dtype": np.int32, "shape": 2}, {"dtype": np.int64, "shape": 3}, {"dtype": np.int64},
    {"dtype": np.int64, "shape": (1, 2)}, {"default": 0},
    {"dtype": np.int64, "shape": 2, "group": "x"},
], ids=["dtype", "shape", "scalar", "2d", "object", "group"])
def test_conflicting_redeclaration_is_refused(pc: ModuleType, new: New, name: str,
                                              kwargs: dict[str, Any]) -> None:
    var = pc.PerContainer(name, dtype=np.int64, shape=2, group=f"{name}.g")
    c = new()
    c.run(var.set, [1, 2])
    args = {"group": f"{name}.g", **kwargs}
    with pytest.raises(ValueError):
        pc.PerContainer(name, **args)
    assert (var.dtype, var.shape) == (np.dtype(np.int64), (2,))
    assert var.of(c).tolist() == [1, 2]


def test_object_variable_redeclared_typed_is_refused(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=5)
    with pytest.raises(ValueError):
        pc.PerContainer(name, dtype=np.int64)
    assert var.get() == 5 and var.dtype is None


def test_per_container_decorator(pc: ModuleType, new: New) -> None:
    """The function runs once, at declaration; its result is the default."""
    calls = []

    @pc.per_container(dtype=np.int64)
    def start() -> int:
        calls.append(1)
        return 41

    assert calls == [1]
    assert start.name == f"{__name__}.test_per_container_decorator.<locals>.start"
    assert start.dtype == np.int64 and start.shape == ()
    c = new()
    assert start.get() == 41 and start.of(c) == 41
    c.run(start.add)
    assert start.of(c) == 42 and calls == [1]
    c.run(start.reset)
    assert start.of(c) == 41


def test_per_container_decorator_with_name_and_bad_result(pc: ModuleType, name: str) -> None:
    @pc.per_container(name=name, dtype=np.float32, group=f"{name}.g")
    def rate() -> float:
        return 0.5

    assert (rate.name, rate.group, rate.get()) == (name, f"{name}.g", 0.5)
    for result, kwargs, error in [(1.5, {}, TypeError), (1000, {}, OverflowError),
                                  (0, {"on_exit": print}, TypeError)]:
        with pytest.raises(error):
            pc.per_container(name=f"{name}.bad", dtype=np.int8, **kwargs)(lambda r=result: r)


def test_object_variables_have_no_values(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=0)
    for method in (var.values, var.min, var.max, var.mean):
        with pytest.raises(TypeError, match="dtype="):
            method()


# -- scalar conversions --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_int_bounds(pc: ModuleType, new: New, name: str, dtype: str) -> None:
    info = np.iinfo(dtype)
    low, high = int(info.min), int(info.max)
    var = pc.PerContainer(name, dtype=dtype)
    c = new()
    for good in (low, high, 0, True, np.int8(5), np.uint64(7), _Index(3)):
        c.run(var.set, good)
        got = var.of(c)
        assert got == operator.index(good) and type(got) is int
    assert _row(pc, var, c) == 3 and var.values().dtype == np.dtype(dtype)
    too_far = np.uint64(2**64 - 1) if high < 2**64 - 1 else -1
    for bad in (low - 1, high + 1, 2**64, -(2**64), 2**1000, too_far):
        with pytest.raises(OverflowError):
            c.run(var.set, bad)
        assert var.of(c) == 3 and _row(pc, var, c) == 3
    for wrong in (1.0, 1.5, np.float64(2.0), "1", b"1", None, 1j, [1]):
        with pytest.raises(TypeError):
            c.run(var.set, wrong)
        assert var.of(c) == 3 and _row(pc, var, c) == 3


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_conversions(pc: ModuleType, new: New, name: str, dtype: str) -> None:
    var = pc.PerContainer(name, dtype=dtype)
    c = new()
    big = float(np.finfo(dtype).max)
    for good in (1, 2.5, -big, big, 0.1, np.float32(1.5), np.int64(3), np.float64(-0.25), True):
        c.run(var.set, good)
        got = var.of(c)
        assert type(got) is float and got == float(np.dtype(dtype).type(good))
    for special in (float("inf"), float("-inf"), float("nan")):
        c.run(var.set, special)
        assert var.of(c) == special or np.isnan(special)
    assert np.isnan(var.of(c)) and np.isnan(_row(pc, var, c))
    c.run(var.set, 2.5)
    too_big = (1e39, -1e39, 1e300, 10**39) if dtype == "float32" else (10**400, -(10**400))
    for bad in too_big:
        with pytest.raises(OverflowError):
            c.run(var.set, bad)
        assert var.of(c) == 2.5 and _row(pc, var, c) == 2.5
    for wrong in ("1.0", None, b"1", [1.0]):
        with pytest.raises(TypeError):
            c.run(var.set, wrong)
        assert var.of(c) == 2.5 and _row(pc, var, c) == 2.5


def test_bool_conversions(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=bool)
    c = new()
    for good in (True, False, np.True_, np.False_):
        c.run(var.set, good)
        assert var.of(c) is bool(good)
    c.run(var.set, True)
    for wrong in (0, 1, 1.0, "True", None, np.int8(1)):
        with pytest.raises(TypeError):
            c.run(var.set, wrong)
        assert var.of(c) is True and bool(_row(pc, var, c)) is True


@pytest.mark.parametrize("dtype", SCALAR_DTYPES)
def test_scalar_reads_are_plain_python(pc: ModuleType, new: New, name: str, dtype: str) -> None:
    var = pc.PerContainer(name, dtype=dtype)
    plain = PLAIN[np.dtype(dtype).kind]
    c = new()
    c.run(var.set, True if dtype == "bool" else 1)
    var.value = True if dtype == "bool" else 1
    for got in (var.get(), var.value, var.of(c), var.of(pc.host), c.run(var.get)):
        assert type(got) is plain and got == 1


def test_value_property_and_reset(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int32, default=-4)
    with new():
        var.value = 9
        with pytest.raises(TypeError):
            var.value = 9.5
        assert var.value == 9
        var.reset()
        assert var.get() == -4


# -- add -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_int_add(pc: ModuleType, new: New, name: str, dtype: str) -> None:
    info = np.iinfo(dtype)
    var = pc.PerContainer(name, dtype=dtype, default=5)
    c = new()
    with c:
        assert var.add() == 6 and type(var.add(0)) is int
        assert var.add(-2) == 4
        assert var.add(True) == 5 and var.add(np.int8(2)) == 7 and var.add(_Index(1)) == 8
        assert var.get() == 8 and _row(pc, var, c) == 8
        for wrong in (1.0, 0.5, "1", None, np.float32(1)):
            with pytest.raises(TypeError):
                var.add(wrong)
        assert var.get() == 8
        var.set(int(info.max))
        for over in (1, 2**64, int(info.max)):
            with pytest.raises(OverflowError):
                var.add(over)
            assert var.get() == int(info.max) and _row(pc, var, c) == int(info.max)
        assert var.add(-1) == int(info.max) - 1
        var.set(int(info.min))
        for under in (-1, -(2**64)):
            with pytest.raises(OverflowError):
                var.add(under)
            assert var.get() == int(info.min) and _row(pc, var, c) == int(info.min)
        assert var.add(1) == int(info.min) + 1


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_float_add(pc: ModuleType, new: New, name: str, dtype: str) -> None:
    var = pc.PerContainer(name, dtype=dtype, default=1.0)
    c = new()
    with c:
        assert var.add() == 2.0 and type(var.add(0)) is float
        assert var.add(0.5) == 2.5 and var.add(np.float32(0.25)) == 2.75
        assert var.add(np.int64(-3)) == -0.25 and _row(pc, var, c) == -0.25
        for wrong in ("1", None, b"x"):
            with pytest.raises(TypeError):
                var.add(wrong)
        assert var.get() == -0.25


def test_bool_add_is_refused(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=bool, default=True)
    c = new()
    for delta in ((), (1,), (True,)):
        with pytest.raises(TypeError):
            c.run(var.add, *delta)
    assert var.of(c) is True


# -- arrays --------------------------------------------------------------------------------
def test_array_get_is_a_writable_view(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int32, shape=(2, 3))
    c = new()
    view = c.run(var.get)
    assert isinstance(view, np.ndarray) and view.shape == (2, 3) and view.dtype == np.int32
    assert view.flags.writeable
    view[1, 2] = 7
    assert c.run(var.get)[1, 2] == 7 and var.of(c)[1, 2] == 7
    assert np.shares_memory(view, c.run(var.get)) and np.shares_memory(view, var.of(c))
    assert _row(pc, var, c)[1, 2] == 7
    rows = var.values()
    assert rows.shape == (len(_storing(pc)), 2, 3)
    rows[...] = -1  # values() is a new array, not a view
    assert view[1, 2] == 7 and _row(pc, var, c)[1, 2] == 7


@pytest.mark.enabled_only
def test_array_views_are_isolated(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.float64, shape=4, default=1.5)
    a, b = new(), new()
    a.run(var.get)[:] = 3.0
    assert b.run(var.get).tolist() == [1.5] * 4 and var.get().tolist() == [1.5] * 4
    assert not np.shares_memory(var.of(a), var.of(b))
    b.run(var.set, [1, 2, 3, 4])
    assert var.of(a).tolist() == [3.0] * 4
    assert [v.tolist() for _, v in var.items()] == [r.tolist() for r in var.values()]


def test_array_set(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int8, shape=3)
    c = new()
    with c:
        var.set(5)
        assert var.get().tolist() == [5, 5, 5]
        var.set([1, -2, 3])
        assert var.get().tolist() == [1, -2, 3]
        var.set(np.array([4, 5, 6], dtype=np.int64))
        for bad, error in [(1.5, TypeError), ([1.0, 2.0, 3.0], TypeError),
                           (np.array([1.0, 2.0, 3.0]), TypeError), (300, OverflowError),
                           ([1, 300, 2], OverflowError), (np.array([1, -129, 2]), OverflowError),
                           ([1, 2], ValueError)]:
            with pytest.raises(error):
                var.set(bad)
            assert var.get().tolist() == [4, 5, 6] and _row(pc, var, c).tolist() == [4, 5, 6]
    floats = pc.PerContainer(f"{name}.f", dtype=np.float32, shape=2, default=1.0)
    for bad in (1e300, [1.0, -1e300], np.array([1e300, 0.0])):
        with pytest.raises(OverflowError):
            c.run(floats.set, bad)
        assert floats.of(c).tolist() == [1.0, 1.0]
    c.run(floats.set, [np.inf, np.nan])
    assert floats.of(c)[0] == np.inf and np.isnan(floats.of(c)[1])


def test_array_add(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int8, shape=2, default=[100, 0])
    c = new()
    with c:
        view = var.get()
        result = var.add(1)
        assert np.shares_memory(result, view) and view.tolist() == [101, 1]
        assert var.add([-1, 2]).tolist() == [100, 3]
        for bad, error in [(1.5, TypeError), ([0.5, 0.5], TypeError), (100, OverflowError),
                           ([0, 200], OverflowError), ([-300, 0], OverflowError)]:
            with pytest.raises(error):
                var.add(bad)
            assert view.tolist() == [100, 3] and _row(pc, var, c).tolist() == [100, 3]
    floats = pc.PerContainer(f"{name}.f", dtype=np.float64, shape=2)
    assert c.run(floats.add, [0.5, 1]).tolist() == [0.5, 1.0]


@pytest.mark.enabled_only
def test_views_survive_ten_thousand_containers(pc: ModuleType, name: str) -> None:
    """5 waves of 2,000 containers, a variable declared between waves: no view ever moves."""
    var = pc.PerContainer(f"{name}.0", dtype=np.int64, shape=2)
    made: list[Any] = []
    views: list[np.ndarray] = []
    extra: list[tuple[Any, Any, np.ndarray]] = []
    try:
        for wave in range(5):
            for _ in range(2000):
                c = pc.Container()
                view = var.of(c)
                view[:] = (len(made), -len(made))
                made.append(c)
                views.append(view)
            other = pc.PerContainer(f"{name}.{wave + 1}", dtype=REC if wave % 2 else np.uint8,
                                    shape=(wave + 1,))
            c = made[wave * 2000]
            other.of(c)["a" if wave % 2 else ...] = wave + 1
            extra.append((other, c, other.of(c)))
        for i, (c, view) in enumerate(zip(made, views)):
            assert view[0] == i and view[1] == -i, f"container {i}: {view}"
            if i % 97 == 0:
                assert np.shares_memory(view, var.of(c))
        rows = var.values()
        index = {c: k for k, c in enumerate(pc.containers())}
        assert len(rows) == len(index)
        picked = rows[[index[c] for c in made]]
        assert picked[:, 0].tolist() == list(range(10_000))
        assert picked[:, 1].tolist() == [-i for i in range(10_000)]
        for wave, (other, c, view) in enumerate(extra):
            field = view["a"] if wave % 2 else view
            assert field.tolist() == [wave + 1] * (wave + 1)
            assert np.shares_memory(view, other.of(c))
    finally:
        for c in made:
            c.close()


# -- structured dtypes ---------------------------------------------------------------------
def test_structured_scalar(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=REC)
    c = new()
    view = c.run(var.get)
    assert isinstance(view, np.ndarray) and view.shape == () and view.dtype == REC
    view["a"] = 5
    view["b"] = 2.5
    assert c.run(var.get)["a"] == 5 and var.of(c)["b"] == 2.5
    c.run(var.set, (7, -1.5))
    assert view.item() == (7, -1.5)
    assert _row(pc, var, c)["a"] == 7
    assert var.values()["a"].shape == (len(_storing(pc)),)
    assert var.values()["b"].dtype == np.float64
    for method in (var.sum, var.min, var.max, var.mean):
        with pytest.raises(TypeError, match=re.escape("values()")):
            method()
    with pytest.raises(TypeError):
        c.run(var.add, 1)
    assert view.item() == (7, -1.5)


def test_structured_array(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=REC, shape=3, default=(1, 0.5))
    c = new()
    view = c.run(var.get)
    assert view.shape == (3,) and view["a"].tolist() == [1, 1, 1]
    view[1]["b"] = 9.0
    assert var.of(c)["b"].tolist() == [0.5, 9.0, 0.5]
    c.run(var.set, (2, 2.5))
    assert view.tolist() == [(2, 2.5)] * 3
    assert var.values()["a"].shape == (len(_storing(pc)), 3)
    with pytest.raises(TypeError):
        var.sum()


# -- threads and tasks ---------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.enabled_only
def test_threads_each_in_its_own_container(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int64)
    arr = pc.PerContainer(f"{name}.arr", dtype=np.float64, shape=2)
    cs = [pc.Container() for _ in range(8)]

    def work(c: Any) -> Callable[[], None]:
        def loop() -> None:
            with c:
                for _ in range(5000):
                    var.add(1)
                    arr.add([1.0, 0.5])
        return loop

    try:
        with switch_often():
            run_threads([work(c) for c in cs])
        assert [var.of(c) for c in cs] == [5000] * 8
        assert var.sum() == 40_000 and var.get() == 0
        assert [arr.of(c).tolist() for c in cs] == [[5000.0, 2500.0]] * 8
        assert arr.sum().tolist() == [40_000.0, 20_000.0]
    finally:
        for c in cs:
            c.close()


def test_asyncio_tasks(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int64)
    cs = [pc.Container() for _ in range(20)]

    async def task(c: Any) -> None:
        with c:
            for _ in range(20):
                var.add(1)
                await asyncio.sleep(0)
                assert pc.current() is (c if pc.ENABLED else pc.host)

    async def main() -> None:
        await asyncio.gather(*(task(cs[i % 20]) for i in range(100)))

    try:
        asyncio.run(main())
        if pc.ENABLED:
            assert [var.of(c) for c in cs] == [100] * 20 and var.get() == 0
        else:
            assert var.get() == 2000 and var.values().tolist() == [2000]
        assert var.sum() == 2000
    finally:
        for c in cs:
            c.close()


# -- sharing and disabled mode -------------------------------------------------------------
@pytest.mark.enabled_only
def test_sharing_group(pc: ModuleType, new: New, name: str) -> None:
    group = f"{name}.g"
    var = pc.PerContainer(name, dtype=np.int64, group=group)
    arr = pc.PerContainer(f"{name}.arr", dtype=np.int16, shape=3, group=group)
    own = pc.PerContainer(f"{name}.own", dtype=np.int64)
    parent = new()
    child = new(parent=parent, share={group})
    grandchild = new(parent=child, share={group})
    child.run(var.set, 5)
    assert var.of(parent) == 5 and grandchild.run(var.get) == 5
    assert grandchild.run(var.add, 1) == 6 and var.of(parent) == 6
    assert np.shares_memory(grandchild.run(arr.get), arr.of(parent))
    grandchild.run(arr.get)[:] = 4
    assert arr.of(parent).tolist() == [4, 4, 4]
    child.run(own.set, 8)
    assert own.of(parent) == 0 and own.of(child) == 8
    storing = [c for c in pc.containers() if c not in (child, grandchild)]
    assert len(var.values()) == len(storing) and len(own.values()) == len(pc.containers())
    assert var.items() == [(c, 6 if c is parent else 0) for c in storing]
    assert var.sum() == 6
    child.close()
    assert var.of(parent) == 6  # the sharers' writes stay in the parent


@pytest.mark.enabled_only
def test_sharing_with_the_host(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.float64, group=f"{name}.g")
    c = new(share={f"{name}.g"})
    c.run(var.set, 1.5)
    assert var.get() == 1.5
    assert var.values().tolist() == [1.5] + [0.0] * (len(pc.containers()) - 2)  # c is left out
    assert (pc.host, 1.5) in var.items() and c not in [k for k, _ in var.items()]
    var.reset()


@pytest.mark.enabled_only
@pytest.mark.parametrize("shared", [False, True], ids=["own", "shared"])
def test_a_context_still_naming_a_closed_container_reaches_nothing(
        pc: ModuleType, new: New, name: str, shared: bool) -> None:
    """A copied context keeps naming a container after it closed: every access through it
    raises, and the closed container's recycled row, now another tenant's, is untouched."""
    group = f"{name}.g"
    counter = pc.PerContainer(name, dtype=np.int64, group=group)
    small = pc.PerContainer(f"{name}.small", dtype=np.uint8, group=group)
    ratio = pc.PerContainer(f"{name}.ratio", dtype=np.float32, group=group)
    arr = pc.PerContainer(f"{name}.arr", dtype=np.int32, shape=2, group=group)
    obj = pc.PerContainer(f"{name}.obj", default=0, group=group)
    parent = new()
    gone = new(parent=parent, share={group} if shared else ())
    with gone:
        for var in (counter, small, ratio, obj):
            var.set(5)
        ctx = contextvars.copy_context()
    gone.close()
    tenant = new()
    for var in (counter, small, ratio, obj):
        tenant.run(var.set, 7)
        parent.run(var.set, 9)
    accesses = [var.get for var in (counter, small, ratio, arr, obj)]
    for var in (counter, small, ratio, obj):
        accesses += [var.reset, lambda var=var: var.set(3)]
        accesses += [lambda var=var, d=d: var.add(d) for d in (1, -1, 0, 2**40)]
    accesses += [arr.reset, lambda: arr.set([1, 2]), lambda: arr.add(1)]
    for access in accesses:
        with pytest.raises(pc.ContainerClosedError, match="closed"):
            ctx.run(access)
    for var in (counter, small, ratio, obj):
        assert var.of(tenant) == 7 and var.of(parent) == 9
    assert tenant.run(arr.get).tolist() == [0, 0]


@pytest.mark.disabled_only
def test_disabled_every_container_uses_the_host_copy(pc: ModuleType, new: New, name: str) -> None:
    var = pc.PerContainer(name, dtype=np.int64, default=2)
    arr = pc.PerContainer(f"{name}.arr", dtype=np.float64, shape=2)
    a, b = new(), new()
    a.run(var.set, 5)
    assert var.get() == 5 and var.of(b) == 5 and b.run(var.add, 1) == 6
    assert var.values().tolist() == [6] and var.items() == [(pc.host, 6)]
    assert var.sum() == var.min() == var.max() == 6 and var.mean() == 6.0
    view = a.run(arr.get)
    view[:] = [1.0, 2.0]
    assert np.shares_memory(view, arr.get()) and np.shares_memory(view, arr.of(b))
    assert arr.values().shape == (1, 2) and arr.sum().tolist() == [1.0, 2.0]
    a.close()
    assert var.get() == 6 and arr.get().tolist() == [1.0, 2.0]  # the host's copy stays
    var.reset()
    arr.reset()
    assert var.get() == 2 and arr.get().tolist() == [0.0, 0.0]
