"""Typed variables, shared by both cores: the dtype spec, value checks, storage geometry and
the numpy reductions across containers.

Storage is the kernel's per-cpu area turned on its side. Every container holds a *row* (its
index in the typed storage, fixed for its life); every typed variable owns a *column* holding
its copy for every row, so one numpy call reduces a variable across all containers (the
kernel's percpu_counter sum, without a loop over containers).

- An array or record variable (kind VIEW) hands out numpy views of its copies, so its column
  is a list of *chunks* that never move: chunk k holds `chunk_rows(k)` rows, and a
  container's copy is chunks[k][i] for (k, i) = locate(row). Chunks are added as containers
  come; a view stays valid for the container's life.
- A scalar variable never hands out its memory (get() returns a Python number), so its column
  is one flat array, chunks == [flat], reallocated (copied under the GIL or the twin's lock)
  as rows are added; a sum is one numpy call. The masks (live rows, ids) are scalar columns.

Invariant the fast sum relies on: a row that is not in use by a live container that stores
the column's group is all zeros, except the rows of closed containers not yet torn down and
rows a stale view still reaches (the *held* rows), which the sum leaves out.

Reductions read a Snapshot: the cores copy a column's rows, the row masks and the held rows at
one instant (the compiled core in a span of C that runs no Python code, the twin under its
locks), so a reduction sees every container's copy before or after a write, never rows torn
down or reused halfway through, and other threads go on writing while numpy reduces.
"""

from __future__ import annotations

import operator
import os
import threading
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np

__all__ = [
    "BOOL", "FLOAT", "INT", "UINT", "VIEW", "FIRST_CHUNK_ROWS", "MAX_CHUNK_ROWS", "Leases",
    "NARROW", "Snapshot", "TypedSpec", "check_redeclaration", "chunk_rows", "chunk_start", "locate",
    "make_view", "maximum", "mean", "minimum", "pieces", "spec_for", "total", "values",
]

# What get() returns: a Python scalar of the kind, or (VIEW) a numpy view of the copy.
INT, UINT, FLOAT, BOOL, VIEW = range(5)

FIRST_CHUNK_ROWS = 64  # chunk 0; each next chunk doubles ...
MAX_CHUNK_ROWS = 65536  # ... up to this size, which every later chunk keeps
_DOUBLINGS = 10  # chunk 10 is the first of MAX_CHUNK_ROWS rows
_GEOMETRIC_ROWS = FIRST_CHUNK_ROWS * ((1 << _DOUBLINGS) - 1)  # rows in chunks 0..9

#: The default of a typed variable declared without one: zeros of its dtype (False, 0, 0.0).
ZEROS: Any = type("Zeros", (), {"__repr__": lambda self: "<zeros>"})()
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# The dtype kinds of values an array variable of each kind takes (bool, int, uint, float).
_TAKES = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}
_SUPPORTED = ("bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64, "
              "or a structured dtype of those")


def chunk_rows(k: int) -> int:
    """Return how many rows chunk k holds."""
    return FIRST_CHUNK_ROWS << min(k, _DOUBLINGS)


def chunk_start(k: int) -> int:
    """Return the first row of chunk k."""
    if k <= _DOUBLINGS:
        return FIRST_CHUNK_ROWS * ((1 << k) - 1)
    return _GEOMETRIC_ROWS + (k - _DOUBLINGS) * MAX_CHUNK_ROWS


def locate(row: int) -> tuple[int, int]:
    """Return (chunk, index in the chunk) of a row; _core_c.pyx has the same in C."""
    if row < _GEOMETRIC_ROWS:
        k = ((row // FIRST_CHUNK_ROWS) + 1).bit_length() - 1
        return k, row - FIRST_CHUNK_ROWS * ((1 << k) - 1)
    offset = row - _GEOMETRIC_ROWS
    return _DOUBLINGS + offset // MAX_CHUNK_ROWS, offset % MAX_CHUNK_ROWS


def _check_dtype(dtype: np.dtype[Any], given: object) -> None:
    if dtype.names is not None:
        if dtype.hasobject:
            raise TypeError(f"dtype {given!r} holds Python objects; fields must be {_SUPPORTED}")
        for name in dtype.names:
            field = dtype.fields[name][0].base  # type: ignore[index]  # a structured dtype
            if field.names is not None:
                raise TypeError(f"dtype {given!r} nests a structured field {name!r}; "
                                f"fields must be {_SUPPORTED.split(', or')[0]}")
            _check_dtype(field, given)
        return
    if (dtype.kind not in "biuf" or not dtype.isnative
            or (dtype.kind == "f" and dtype.itemsize not in (4, 8))):
        raise TypeError(f"dtype {given!r} is not supported: use {_SUPPORTED} (native byte order)")


def _check_shape(shape: object) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, tuple) or not all(isinstance(d, int) for d in dims):
        raise TypeError(f"shape must be an int or a tuple of ints, not {shape!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"shape {shape!r} has a dimension below 1")
    return dims


class TypedSpec:
    """A typed variable's dtype, shape and default, and the checks a value passes to be stored."""

    __slots__ = ("dtype", "shape", "kind", "default", "default_bytes", "row_bytes", "low", "high")

    def __init__(self, dtype: object, shape: object, default: object) -> None:
        try:
            self.dtype: np.dtype[Any] = np.dtype(dtype)  # type: ignore[call-overload]  # checked
        except TypeError:
            raise TypeError(f"dtype {dtype!r} is not a numpy dtype; use {_SUPPORTED}") from None
        _check_dtype(self.dtype, dtype)
        self.shape = _check_shape(shape)
        scalar = not self.shape and self.dtype.names is None
        self.kind = {"i": INT, "u": UINT, "f": FLOAT, "b": BOOL}[self.dtype.kind] if scalar else VIEW
        self.low, self.high = 0, 0
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            self.low, self.high = int(info.min), int(info.max)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape, dtype=np.int64))
        if default is ZEROS:
            value = np.zeros(self.shape, self.dtype)
        elif scalar:
            value = np.array(self.convert(default), dtype=self.dtype)
        else:
            value = self.convert_array(default)
        value.flags.writeable = False
        self.default: np.ndarray[Any, Any] = value
        bytes_ = value.tobytes()
        #: The default's bytes, or None when they are all zero (new rows are zero already).
        self.default_bytes: bytes | None = bytes_ if any(bytes_) else None

    def same_storage(self, other: TypedSpec) -> bool:
        """Return True if `other` lays out its values as this spec does."""
        return self.dtype == other.dtype and self.shape == other.shape

    def describe(self) -> str:
        """Return e.g. "int64" or "float64 (3,)"."""
        return f"{self.dtype}" + (f" {self.shape}" if self.shape else "")

    # -- scalars --------------------------------------------------------------------------------
    def convert(self, value: object) -> Any:
        """Return value as the Python int/float/bool to store, or raise TypeError/OverflowError."""
        if self.kind == BOOL:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise TypeError(f"a bool variable takes True or False, not {type(value).__name__}")
        number = self.convert_delta(value)
        if self.kind == FLOAT:
            if self.dtype.itemsize == 4 and np.isfinite(number) and abs(number) > _FLOAT32_MAX:
                raise OverflowError(f"{number!r} is out of the float32 range")
        elif not self.low <= number <= self.high:
            raise OverflowError(
                f"{number} is out of the {self.dtype} range [{self.low}, {self.high}]")
        return number

    def add(self, current: Any, delta: object) -> Any:
        """Return current + delta, checked as convert() checks a value."""
        if self.kind == BOOL:
            raise TypeError("add() is for numbers; a bool variable takes set()")
        return self.convert(current + self.convert_delta(delta))

    def convert_delta(self, value: object) -> Any:
        """Return value as an exact Python int or float of the variable's kind (no range
        check), or raise. The compiled core stores the result with no Python code between
        taking the cell's address and writing it, so the result must be exact: an int-like's
        __index__ (or __float__) runs here once, never again at the store."""
        if self.kind == FLOAT:
            if isinstance(value, (str, bytes, bytearray)) or not (
                    hasattr(type(value), "__float__") or hasattr(type(value), "__index__")):
                raise TypeError(
                    f"a {self.dtype} variable takes a real number, not {type(value).__name__}")
            return float(value)  # type: ignore[arg-type]  # checked; float() returns a float
        if not hasattr(type(value), "__index__"):
            raise TypeError(f"a {self.dtype} variable takes an int, not {type(value).__name__}")
        # An exact int, or TypeError if __index__ returns anything else.
        return operator.index(value)  # type: ignore[arg-type]  # checked: it has __index__

    # -- arrays and records ---------------------------------------------------------------------
    def convert_array(self, value: object) -> np.ndarray[Any, Any]:
        """Return value as an array of the variable's dtype and shape, or raise."""
        if self.dtype.names is not None:
            try:
                result = np.array(value, dtype=self.dtype)
            except OverflowError:
                raise
            except (TypeError, ValueError) as error:
                raise TypeError(f"{value!r} is not a {self.dtype} record: {error}") from None
            return self._broadcast(result)
        try:
            source = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise TypeError(f"{value!r} is not an array of numbers: {error}") from None
        if source.dtype.kind == "O" and source.size and all(
                isinstance(v, int) for v in source.flat):  # Python ints beyond 64 bits, or sums
            if self.dtype.kind in "iu" and not all(self.low <= v <= self.high for v in source.flat):
                raise OverflowError(f"{value!r} does not fit a {self.dtype} variable")
            source = source.astype(self.dtype if self.dtype.kind in "iu" else np.float64)
        if source.dtype.kind not in _TAKES[self.dtype.kind]:
            raise TypeError(f"a {self.describe()} variable does not take values of dtype "
                            f"{source.dtype} (storing them would change their kind)")
        if self.dtype.kind in "iu" and source.size:
            if int(source.min()) < self.low or int(source.max()) > self.high:
                raise OverflowError(f"{value!r} does not fit a {self.dtype} variable")
        with np.errstate(all="ignore"):
            result = source.astype(self.dtype)
        if np.any(np.isinf(result) & ~np.isinf(source)):  # only floats can turn infinite
            raise OverflowError(f"{value!r} does not fit a {self.dtype} variable")
        return self._broadcast(result)

    def _broadcast(self, result: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        try:
            source = np.broadcast_to(result, self.shape)
        except ValueError:
            raise ValueError(
                f"a value of shape {result.shape} does not fit shape {self.shape}") from None
        # Into zeros, field by field: a record dtype's gaps (offsets, align=True) stay zero
        # instead of carrying whatever heap bytes np.array left there into a tenant's row.
        value = np.zeros(self.shape, self.dtype)
        _copy_fields(value, source)
        return value

    def add_array(self, current: np.ndarray[Any, Any], delta: object) -> np.ndarray[Any, Any]:
        """Return current + delta as a new array, checked as convert_array() checks a value."""
        if self.dtype.names is not None or self.dtype.kind == "b":
            raise TypeError(f"add() is for numbers; a {self.describe()} variable takes set()")
        step = self.convert_array(delta)  # the delta's kind and range must fit the variable too
        if self.dtype.kind == "f":
            return self.convert_array(current + step)
        return self.convert_array(current.astype(object) + step.astype(object))

    def from_bytes(self, raw: bytes) -> np.ndarray[Any, Any]:
        """Return a row's bytes as a (read-only) array of the variable's dtype and shape."""
        return np.frombuffer(raw, self.dtype).reshape(self.shape)

    def read(self, chunk: np.ndarray[Any, Any], index: int) -> Any:
        """Return a scalar copy as a Python int/float/bool."""
        return chunk.item(index)


def spec_for(name: str, dtype: object, shape: object, default: object, has_default: bool,
             factory: object, on_exit: object) -> TypedSpec | None:
    """Return the typed spec of a declaration, or None for an object variable."""
    if dtype is None:
        if shape != ():
            raise TypeError(f"PerContainer {name!r}: shape= is for typed variables; add dtype=")
        return None
    if factory is not None or on_exit is not None:
        raise TypeError(f"PerContainer {name!r}: a typed variable (dtype=) takes default=, "
                        "not factory= or on_exit= (its copies are plain memory, not objects)")
    return TypedSpec(dtype, shape, default if has_default else ZEROS)


def check_redeclaration(name: str, had: TypedSpec | None, spec: TypedSpec | None) -> None:
    """Raise ValueError if a redeclaration changes how the variable is stored."""
    if had is None and spec is None or had is not None and spec is not None \
            and had.same_storage(spec):
        return
    before = "an object variable" if had is None else f"typed {had.describe()}"
    after = "an object variable" if spec is None else f"typed {spec.describe()}"
    raise ValueError(f"PerContainer {name!r} is already declared as {before}; "
                     f"a redeclaration must keep that, not make it {after}")


class Column(Protocol):
    """What the reductions read of a core's column."""

    @property
    def spec(self) -> TypedSpec: ...
    @property
    def chunks(self) -> list[np.ndarray[Any, Any]]: ...
    @property
    def wide(self) -> bool: ...


# -- views ---------------------------------------------------------------------------------------
def make_view(column: Column, row: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Return (view, lease): a writable view of a row's copy, and the array every view made
    from it keeps alive (its base is a memoryview, where numpy stops collapsing bases)."""
    spec = column.spec
    k, index = locate(row)
    chunk_bytes = column.chunks[k].reshape(-1).view(np.uint8)
    start = index * spec.row_bytes
    buffer = memoryview(chunk_bytes)  # type: ignore[arg-type]  # numpy types __buffer__ for 3.12+
    lease = np.frombuffer(buffer[start:start + spec.row_bytes], dtype=spec.dtype)
    return lease.reshape(spec.shape), lease


class Leases:
    """Rows that views handed out still reach. A torn-down row they reach is not reused (it
    would show a new tenant's data through an old tenant's view) until the last one dies."""

    def __init__(self, release: Callable[[int], None]) -> None:
        self.refs: dict[int, dict[int, weakref.ref[Any]]] = {}  # row -> id(ref) -> ref
        self.waiting: set[int] = set()  # torn down, waiting for their views to die
        # release(row) takes the row out of `waiting` and frees it in one step (no Python code
        # or under the lock between): a snapshot must never find it in neither or in both.
        self._release = release
        self._lock = threading.RLock()
        if hasattr(os, "register_at_fork"):  # one per core: a thread may hold it at fork()
            os.register_at_fork(after_in_child=self._new_lock)

    def _new_lock(self) -> None:
        self._lock = threading.RLock()

    def add(self, row: int, lease: np.ndarray[Any, Any]) -> None:
        """Count a lease on row until it is collected."""
        ref = weakref.ref(lease, partial(self._dropped, row))
        with self._lock:
            while True:
                refs = self.refs.setdefault(row, {})
                refs[id(ref)] = ref
                # A gc pass inside setdefault can run _dropped on this thread (the lock is
                # reentrant) and detach `refs` as it empties: a lease kept there would be lost,
                # and the row reused under a live view. Count it in the row's current dict.
                if self.refs.get(row) is refs:
                    return

    def retire(self, row: int) -> bool:
        """At teardown: return True if the row is free to reuse, else make it wait."""
        with self._lock:  # not between a last lease's callback and its check of `waiting`
            if row in self.refs:
                self.waiting.add(row)
                return False
            return True

    def _dropped(self, row: int, ref: weakref.ref[Any]) -> None:
        # A weakref callback: views of one row die in any thread, so the check that the row's
        # last lease is gone and the row's removal are one step under the lock.
        with self._lock:
            refs = self.refs.get(row)
            if refs is None:
                return
            refs.pop(id(ref), None)
            if refs:
                return
            del self.refs[row]
            free = row in self.waiting  # torn down: no view of it can be made any more
        if free:  # outside the lock: the release takes the core's locks (the twin's), which a
            self._release(row)  # thread making a view holds while it waits for this one


# -- across containers ---------------------------------------------------------------------------
def pieces(column: Column, *flats: Column) -> list[tuple[np.ndarray[Any, Any], ...]]:
    """Return (chunk, the same rows of each flat column) for each of column's chunks.

    Columns may differ in length while another thread grows them; the rows past the shorter
    are new (zero, and no live container's), so each piece is cut to the common length."""
    chunks = list(column.chunks)
    bases = [flat.chunks[0] for flat in flats]
    pieces = []
    for k, chunk in enumerate(chunks):
        start = chunk_start(k) if column.spec.kind == VIEW else 0
        parts = [base[start:start + len(chunk)] for base in bases]
        rows = min([len(chunk), *map(len, parts)])
        pieces.append((chunk[:rows], *(part[:rows] for part in parts)))
    return pieces


class Snapshot(NamedTuple):
    """A typed variable's copies, taken at one instant with the row masks: what reductions read.

    Rows are those ever taken (the rest are zero and no container's); `data` is a private copy,
    so a reduction may change it."""

    spec: TypedSpec
    wide: bool  # the column's `wide` then (see NARROW)
    data: np.ndarray[Any, Any]  # row -> its copy, shape (rows, *spec.shape)
    held: np.ndarray[Any, Any]  # rows that hold data but no live container (see total())
    live: np.ndarray[Any, Any] | None  # row -> a live container storing the variable has it
    ident: np.ndarray[Any, Any] | None  # row -> its container's id, for values()' order


def _live(snapshot: Snapshot) -> np.ndarray[Any, Any]:
    assert snapshot.live is not None, "the snapshot was taken without the masks"
    return snapshot.live


def values(snapshot: Snapshot) -> np.ndarray[Any, Any]:
    """Return the copies of live storing containers' rows, ordered by container id."""
    live = _live(snapshot)
    assert snapshot.ident is not None
    order = np.argsort(snapshot.ident[live], kind="stable")
    picked: np.ndarray[Any, Any] = snapshot.data[live][order]
    return picked


def _no_records(spec: TypedSpec, what: str) -> TypedSpec:
    if spec.dtype.names is not None:
        raise TypeError(f"{what}() reduces numbers; for a {spec.dtype} record variable, "
                        f"reduce a field of values(), e.g. values()[{spec.dtype.names[0]!r}]")
    return spec


def _scalar(result: Any, spec: TypedSpec) -> Any:
    if spec.shape:
        return result
    return result.item() if isinstance(result, (np.ndarray, np.generic)) else result


#: While no value of magnitude NARROW or more was ever stored in a 64-bit scalar column (the
#: column is not `wide`), its wrapped int64 sum over fewer than 2**22 rows is exact.
NARROW = 1 << 40
_NARROW_ROWS = 1 << 22


def total(snapshot: Snapshot) -> Any:
    """Return the sum over the rows in use by storing containers: exact for ints (a Python
    int, or an object array for an array variable), float64 for floats.

    Every other row is zero but the held rows (closed containers not torn down yet, rows stale
    views reach), zeroed in the snapshot's copy first: a plain numpy sum, no mask."""
    spec = _no_records(snapshot.spec, "sum")
    kind = spec.dtype.kind
    data = snapshot.data
    data[snapshot.held] = 0
    accumulator = {"b": np.int64, "i": np.int64, "u": np.uint64, "f": np.float64}[kind]
    result: Any = np.add.reduce(data, axis=0, dtype=accumulator)
    if kind in "iu" and spec.dtype.itemsize == 8 and (
            spec.kind == VIEW or snapshot.wide or len(data) >= _NARROW_ROWS):
        result = _exact_wide_sum(data, result, spec)
    elif kind != "f":
        result = result.astype(object) if spec.shape else int(result)
    return _scalar(result, spec)


def _exact_wide_sum(data: np.ndarray[Any, Any], wrapped: Any, spec: TypedSpec) -> Any:
    """Return the exact sum of 64-bit ints: the wrapped numpy sum when a float64 sum shows it
    is far from the range's edge, else the high and low 32-bit halves summed apart."""
    estimate = np.add.reduce(data, axis=0, dtype=np.float64)
    if np.all(np.abs(estimate) < 2.0 ** 62):
        return wrapped.astype(object) if spec.shape else int(wrapped)
    high = np.add.reduce(data >> 32, axis=0, dtype=np.int64).astype(object)
    low = np.add.reduce(data & 0xFFFFFFFF, axis=0, dtype=np.int64).astype(object)
    return high * (1 << 32) + low


def _extreme(snapshot: Snapshot, ufunc: Any, what: str) -> Any:
    spec = _no_records(snapshot.spec, what)
    live = _live(snapshot)
    if not live.any():
        raise ValueError(f"{what}() of a variable no live container stores")
    widen = (1,) * len(spec.shape)  # the mask broadcast over an array variable's axes
    if spec.dtype.kind == "b":
        start: Any = ufunc is np.minimum
    elif spec.dtype.kind == "f":
        start = np.inf if ufunc is np.minimum else -np.inf
    else:
        info = np.iinfo(spec.dtype)
        start = info.max if ufunc is np.minimum else info.min
    result = ufunc.reduce(snapshot.data, axis=0, where=live.reshape(live.shape + widen),
                          initial=start)
    return _scalar(result.astype(spec.dtype), spec)


def minimum(snapshot: Snapshot) -> Any:
    """Return the least value over the rows of live storing containers."""
    return _extreme(snapshot, np.minimum, "min")


def maximum(snapshot: Snapshot) -> Any:
    """Return the greatest value over the rows of live storing containers."""
    return _extreme(snapshot, np.maximum, "max")


def mean(snapshot: Snapshot) -> Any:
    """Return the mean over the rows of live storing containers, as float64."""
    _no_records(snapshot.spec, "mean")
    count = int(np.count_nonzero(_live(snapshot)))
    if count == 0:
        raise ValueError("mean() of a variable no live container stores")
    result = np.asarray(total(snapshot), dtype=np.float64) / count
    return _scalar(result, snapshot.spec)


def _copy_fields(into: np.ndarray[Any, Any], source: np.ndarray[Any, Any]) -> None:
    """into[...] = source, one field at a time for a record dtype (nested ones too): numpy 2.5
    copies a record whole, its gaps included."""
    names = into.dtype.names
    if names is None:
        into[...] = source
        return
    for name in names:
        _copy_fields(into[name], source[name])
