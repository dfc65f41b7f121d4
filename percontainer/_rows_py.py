"""The pure-Python twin's typed storage: a row for every container, a column for every typed
variable (see _typed.py for the layout). _core_c.pyx keeps the same state in C."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any

import numpy as np

from ._typed import (INT, NARROW, UINT, VIEW, ZEROS, Leases, Snapshot, TypedSpec, chunk_rows,
                     chunk_start, locate, make_view, pieces)


# What RowSpace.snapshot() copies besides the column and the held rows.
DATA_ONLY = 0
WITH_LIVE = 1  # the mask of the rows of live containers storing the group
WITH_IDENT = 2  # that mask and the container ids


class Column:
    """One typed variable's copies (or a row mask): one flat array for a scalar, chunks that
    never move for an array or record (see _typed.py)."""

    __slots__ = ("spec", "group", "chunks", "wide")

    def __init__(self, spec: TypedSpec, group: str) -> None:
        self.spec = spec
        self.group = group
        self.chunks: list[np.ndarray[Any, Any]] = []
        self.wide = _is_wide(spec, spec.default)  # see _typed.NARROW

    def set_spec(self, spec: TypedSpec) -> None:
        """Take a spec of the same layout (a redeclaration's new default)."""
        self.spec = spec
        self.wide = self.wide or _is_wide(spec, spec.default)

    def grow_to(self, chunk_count: int) -> bool:
        """Make room for the rows of `chunk_count` chunks (zeroed); return True if it had to
        (and so allocated: Python code may have run), False if the column was big enough.

        Reentrant: an allocation can run a finalizer that creates containers, and so a nested
        growth (the lock is reentrant). So everything is made first, then the column is looked
        at again and switched only if no growth came meanwhile; else the work is redone."""
        shape, dtype = self.spec.shape, self.spec.dtype
        if self.spec.kind != VIEW:
            rows = chunk_start(chunk_count)
            if self.chunks and len(self.chunks[0]) >= rows:
                return False
            while True:
                had = self.chunks
                if had and len(had[0]) >= rows:
                    return True
                flat = np.zeros(rows, dtype)
                if had:
                    flat[:len(had[0])] = had[0]
                grown = [flat]
                if self.chunks is had:  # no growth meanwhile: nothing written is lost
                    self.chunks = grown
                    return True
        if len(self.chunks) >= chunk_count:
            return False
        while len(self.chunks) < chunk_count:
            k = len(self.chunks)
            chunk = np.zeros((chunk_rows(k), *shape), dtype)
            if len(self.chunks) == k:  # else a nested growth added chunk k: look again
                self.chunks.append(chunk)
        return True

    def _at(self, row: int) -> tuple[np.ndarray[Any, Any], int]:
        if self.spec.kind != VIEW:
            return self.chunks[0], row
        k, index = locate(row)
        return self.chunks[k], index

    def read(self, row: int) -> Any:
        """Return a row's scalar as a Python int/float/bool."""
        chunk, index = self._at(row)
        return chunk.item(index)

    def write(self, row: int, value: Any) -> None:
        """Store a checked value (or array) in a row."""
        chunk, index = self._at(row)
        chunk[index] = value
        if not self.wide and _is_wide(self.spec, value):
            self.wide = True

    def clear(self, row: int) -> None:
        """Zero a row."""
        chunk, index = self._at(row)
        chunk[index] = np.zeros((), self.spec.dtype)

    def copy_rows(self, rows: int) -> np.ndarray[Any, Any]:
        """Return a copy of the first `rows` rows' copies, shape (rows, *shape)."""
        if self.spec.kind != VIEW:
            first: np.ndarray[Any, Any] = self.chunks[0][:rows].copy()  # Any on numpy < 2
            return first
        parts, left = [], rows
        for chunk in self.chunks:
            if left <= 0:
                break
            parts.append(chunk[:left])
            left -= len(parts[-1])
        if not parts:
            return np.zeros((0, *self.spec.shape), self.spec.dtype)
        return np.concatenate(parts)

    def fill(self, rows: Iterable[int] | Column) -> None:
        """Write the default into the given rows, or into the rows a mask column selects."""
        value = self.spec.default
        if isinstance(rows, Column):
            for chunk, selected in pieces(self, rows):
                chunk[selected] = value
        else:
            for row in rows:
                self.write(row, value)


def _is_wide(spec: TypedSpec, value: Any) -> bool:
    """Return True for a 64-bit scalar value of magnitude NARROW or more (see _typed.total)."""
    return (spec.kind in (INT, UINT) and spec.dtype.itemsize == 8
            and not -NARROW < int(value) < NARROW)


def _mask() -> Column:
    return Column(TypedSpec(np.bool_, (), ZEROS), "")


class RowSpace:
    """Rows, columns and the masks that say which rows hold a live container's storage."""

    def __init__(self) -> None:
        # Reentrant: a lease dying during a GC pass inside a locked section frees a row.
        self.lock = threading.RLock()
        if hasattr(os, "register_at_fork"):  # one per process: a thread may hold it at fork()
            os.register_at_fork(after_in_child=self._new_lock)
        self.chunk_count = 0
        self.columns: list[Column] = []  # the typed variables' columns and the masks below
        self.live = self._add(_mask())  # rows of live containers
        self.ident = self._add(Column(TypedSpec(np.uint64, (), ZEROS), ""))  # container id: order
        self.stores: dict[str, Column] = {}  # group -> rows of live containers storing it
        self.top = 0  # rows ever taken
        self.free: list[int] = []  # zeroed rows to reuse, last freed first
        self.closed: dict[int, frozenset[str]] = {}  # closed, not torn down: row -> shared
        self.leases = Leases(self._reuse)
        self.changes = 0  # counts rows taken, closed and freed: see snapshot()

    def _new_lock(self) -> None:
        self.lock = threading.RLock()

    def _add(self, column: Column) -> Column:
        while column.grow_to(self.chunk_count):  # until no growth came while it grew
            pass
        self.columns.append(column)
        return column

    def mask(self, group: str) -> Column:
        """Return the mask of rows whose live container stores `group` itself."""
        return self.stores.get(group, self.live)

    def snapshot(self, column: Column, group: str, masks: int) -> Snapshot:
        """Return copies of column's rows and the held rows (and, as `masks` asks, of the mask
        of group's storing containers and the ids), all of one instant: see _typed.Snapshot.

        The caller holds the core's lock (no typed write meanwhile); a finalizer run by an
        allocation here can still take or free rows (the locks are reentrant), so the copies
        are made again until no row changed hands while they were made."""
        with self.lock:
            while True:
                changes = self.changes
                rows = self.top
                data = column.copy_rows(rows)
                held = np.array([*self.closed, *self.leases.waiting], dtype=np.intp)
                live = self.mask(group).chunks[0][:rows].copy() if masks >= WITH_LIVE else None
                ident = self.ident.chunks[0][:rows].copy() if masks == WITH_IDENT else None
                if self.changes == changes:
                    return Snapshot(column.spec, column.wide, data, held, live, ident)

    # -- columns ----------------------------------------------------------------------------
    def add_column(self, spec: TypedSpec, group: str) -> Column:
        """Make a typed variable's column, at its default in every container storing it."""
        with self.lock:
            column = self._add(Column(spec, group))
            if spec.default_bytes is not None:
                column.fill(self.mask(group))
                column.fill(row for row, shared in self.closed.items() if group not in shared)
            return column

    def drop_column(self, column: Column) -> None:
        """Forget a dead variable's column (views of it keep its chunks alive)."""
        with self.lock:
            self.columns.remove(column)

    # -- rows -------------------------------------------------------------------------------
    def take(self, ident: int, shared: frozenset[str]) -> int:
        """Return a zeroed row for a new live container, at the defaults where it stores."""
        with self.lock:
            for group in shared:
                if group not in self.stores:  # from now on this group has its own mask
                    self.stores[group] = mask = self._add(_mask())
                    for chunk, live in zip(mask.chunks, self.live.chunks):
                        chunk[:] = live
            if self.free:
                row = self.free.pop()
            else:
                while self.top >= self._capacity():
                    self._grow()
                row = self.top
                self.top += 1
            for column in self.columns:
                if column.spec.default_bytes is not None and column.group not in shared:
                    column.write(row, column.spec.default)
            self.live.write(row, True)
            self.ident.write(row, ident)
            for group, mask in self.stores.items():
                mask.write(row, group not in shared)
            self.changes += 1
            return row

    def _capacity(self) -> int:
        return chunk_start(self.chunk_count)

    def _grow(self) -> None:
        """Add a chunk's rows to every column, and only then count them: a finalizer run by an
        allocation may take rows (nested here), add or drop a column. Passes until one finds
        every column grown, which allocated nothing, so it ran no finalizer."""
        count = self.chunk_count + 1
        grew = True
        while grew:
            grew = False
            i = 0
            while i < len(self.columns):  # by index: the list can change meanwhile
                grew = self.columns[i].grow_to(count) or grew
                i += 1
        self.chunk_count = max(self.chunk_count, count)

    def close(self, row: int, shared: frozenset[str]) -> None:
        """Take a closed container's row out of the live rows (its values stay until teardown)."""
        with self.lock:
            self.live.clear(row)
            for mask in self.stores.values():
                mask.clear(row)
            self.closed[row] = shared
            self.changes += 1

    def release(self, row: int) -> None:
        """Zero a torn-down container's row; reuse it once no view of it is left."""
        with self.lock:
            self.closed.pop(row, None)
            self._zero(row)
            if self.leases.retire(row):
                self.free.append(row)
            self.changes += 1

    def _reuse(self, row: int) -> None:
        with self.lock:
            self.leases.waiting.discard(row)
            self._zero(row)  # a stale view may have written into it meanwhile
            self.free.append(row)
            self.changes += 1

    def _zero(self, row: int) -> None:
        for column in self.columns:
            column.clear(row)

    def view(self, column: Column, row: int) -> np.ndarray[Any, Any]:
        """Return a new view of a row's copy; the row is not reused while one is alive."""
        with self.lock:
            view, lease = make_view(column, row)
            self.leases.add(row, lease)
            return view
