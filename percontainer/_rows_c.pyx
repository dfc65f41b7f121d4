# cython: language_level=3, embedsignature=True, embedsignature.format=clinic
# cython: binding=False, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# cython: auto_pickle=False
"""The compiled core's typed storage; _rows_py.py is the same in Python, and the reference.

Taking, closing and releasing a row run no Python code but when the storage grows (a numpy
allocation per column), so they are atomic under the GIL. Anything that can run Python code
(an allocation can run a finalizer or a gc callback, which can create containers and so grow
the storage, or take and free rows) comes first; the state is then read again and changed in
a span that runs none. So a nested or concurrent growth is seen, never overwritten or
overrun, and a snapshot copies one instant.
"""

cimport cython
from cpython.long cimport PyLong_AsVoidPtr
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset

import numpy as np

from ._typed import _NARROW_ROWS, NARROW, ZEROS, Leases, Snapshot, TypedSpec, make_view


cdef inline Py_ssize_t _chunk_rows(Py_ssize_t k) noexcept:
    """Return how many rows chunk k holds, as _typed.chunk_rows() (no Python code)."""
    return FIRST_CHUNK_ROWS << (k if k < DOUBLINGS else DOUBLINGS)


cdef inline Py_ssize_t _chunk_start(Py_ssize_t k) noexcept:
    """Return the first row of chunk k, as _typed.chunk_start() (no Python code)."""
    if k <= DOUBLINGS:
        return FIRST_CHUNK_ROWS * ((<Py_ssize_t>1 << k) - 1)
    return GEOMETRIC_ROWS + ((k - DOUBLINGS) << MAX_CHUNK_SHIFT)


@cython.final
cdef class Column:
    """One typed variable's copies (or a row mask): one flat array for a scalar, chunks that
    never move for an array or record (see _typed.py)."""

    def __dealloc__(self):
        PyMem_Free(self.bases)

    cdef int grow_to(self, Py_ssize_t chunk_count) except -1:
        """Make room for the rows of `chunk_count` chunks (zeroed); return 1 if it allocated
        (Python code may have run), 0 if the column was big enough (none ran).

        The allocations can run Python code that grows this column meanwhile (a finalizer
        creating containers): the new array and its address are made first, then the column
        is read again and switched with no Python code between, copying what it holds then."""
        cdef Py_ssize_t k, have, rows = _chunk_start(chunk_count)
        cdef char* data
        cdef char** bases
        if self.kind != KIND_VIEW:
            if self.chunks and len(self.chunks[0]) >= rows:
                return 0
            flat = np.zeros(rows, self.spec.dtype)
            data = _data(flat)
            grown = [flat]
            # From here on no Python code runs.
            if self.chunks and len(self.chunks[0]) >= rows:  # grown meanwhile
                return 1
            have = len(self.chunks[0]) if self.chunks else 0
            if have:
                memcpy(data, self.flat, have * self.row_bytes)  # no write is lost
            self.flat = data
            self.chunks = grown
            return 1
        if len(self.chunks) >= chunk_count:
            return 0
        while len(self.chunks) < chunk_count:
            k = len(self.chunks)
            chunk = np.zeros((_chunk_rows(k),) + self.spec.shape, self.spec.dtype)
            data = _data(chunk)
            # From here on no Python code runs.
            if len(self.chunks) != k:  # a nested growth added chunk k: look again
                continue
            bases = <char**>PyMem_Realloc(self.bases, (k + 1) * sizeof(char*))
            if bases == NULL:
                raise MemoryError()
            self.bases = bases
            self.bases[k] = data
            self.chunks.append(chunk)
        return 1

    cdef int set_spec(self, object spec) except -1:
        """Take a spec of the same layout (a redeclaration's new default)."""
        self.spec = spec
        self.row_bytes = spec.row_bytes
        self.kind = spec.kind
        self.itemsize = spec.dtype.itemsize
        self.fill = spec.default_bytes
        self._set_range()
        if self.kind != KIND_VIEW:
            self.note(spec.default.item())
        return 0

    cdef int note(self, object value) except -1:
        """Mark the column wide if value, about to be stored, is (see _typed.NARROW)."""
        if not self.wide and self.itemsize == 8 and (self.kind == KIND_INT or
                                                     self.kind == KIND_UINT):
            if not -NARROW < value < NARROW:
                self.wide = True
                self._set_range()
        return 0

    cdef int _set_range(self) except -1:
        self.counter = self.kind == KIND_INT and self.itemsize == 8 and not self.wide
        if self.kind == KIND_UINT and self.itemsize == 8:  # high < 0: no limit
            self.low, self.high = 0, (-1 if self.wide else NARROW - 1)
        elif self.kind == KIND_INT or self.kind == KIND_UINT:
            if self.itemsize == 8 and not self.wide:
                self.low, self.high = -(NARROW - 1), NARROW - 1
            else:
                self.low, self.high = self.spec.low, self.spec.high
        return 0


cdef inline char* _data(object array) except NULL:
    """Return a numpy array's data address. Runs Python code (it builds a dict): take it
    before a span that must run none."""
    return <char*>PyLong_AsVoidPtr(array.__array_interface__["data"][0])


cdef Column _new_column(object spec, str group):
    cdef Column column = Column.__new__(Column)
    column.group = group
    column.chunks = []
    column.set_spec(spec)
    return column


ctypedef struct Rows:  # a growable array of row numbers
    int* rows
    Py_ssize_t count
    Py_ssize_t capacity


cdef int rows_push(Rows* rows, int row) except -1:
    cdef int* grown
    if rows.count == rows.capacity:
        grown = <int*>PyMem_Realloc(rows.rows, (2 * rows.capacity + 8) * sizeof(int))
        if grown == NULL:
            raise MemoryError()
        rows.rows = grown
        rows.capacity = 2 * rows.capacity + 8
    rows.rows[rows.count] = row
    rows.count += 1
    return 0


cdef bint rows_remove(Rows* rows, int row) noexcept:
    """Remove row (the array is short: closed containers still in use); False if absent."""
    cdef Py_ssize_t i
    for i in range(rows.count - 1, -1, -1):
        if rows.rows[i] == row:
            rows.count -= 1
            rows.rows[i] = rows.rows[rows.count]
            return True
    return False


cdef list _columns = []  # the typed variables' columns and the masks below
cdef Py_ssize_t _chunk_count = 0
cdef Py_ssize_t _capacity = 0  # rows in _chunk_count chunks
cdef Py_ssize_t _top = 0  # rows ever taken
# Row bookkeeping in C arrays: creating and closing a container box no row number.
cdef Rows _free  # zeroed rows to reuse, last freed first
cdef Rows _closed  # rows of closed containers not torn down yet
cdef dict _closed_shared = {}  # those of them that share groups: row -> the shared groups
cdef dict _stores = {}  # group -> mask of the rows of live containers storing it themselves


cdef Column _add(Column column):
    """Register a new column, grown to the current size: the last grow_to() that found it big
    enough ran no Python code, so no growth can come between it and the registration."""
    while column.grow_to(_chunk_count):
        pass
    _columns.append(column)
    return column


cdef Column _new_mask():
    return _add(_new_column(TypedSpec(np.bool_, (), ZEROS), ""))


cdef Column _live = _new_mask()  # rows of live containers
cdef Column _ident = _add(_new_column(TypedSpec(np.uint64, (), ZEROS), ""))  # ids: values() order


def _reuse(int row):
    """A torn-down row's last view died: zero it again (the view may have written) and reuse;
    in one span that runs no Python code, so a snapshot finds it held or free, not both."""
    _waiting.discard(row)
    _zero(row)
    rows_push(&_free, row)


cdef object _leases = Leases(_reuse)
cdef dict _lease_refs = _leases.refs  # row -> its live views
cdef set _waiting = _leases.waiting  # torn-down rows that live views still reach


cdef Column mask(str group):
    """Return the mask of rows whose live container stores `group` itself."""
    cdef object found = _stores.get(group)
    return _live if found is None else <Column>found


cdef object snapshot(Column column, str group, int masks):
    """Return a _typed.Snapshot: copies of column's rows and the held rows (and, as `masks`
    asks, of the mask of group's storing containers and the ids) of one instant.

    The arrays are allocated first (that can run Python code, which can take and free rows);
    the copies are then made in one span that runs none, if the row counts are still those
    allocated for (else again). So a reduction sees every copy before or after a write, and
    numpy reduces the copies while other threads go on."""
    cdef Py_ssize_t rows, held_count, i, k, start, length
    cdef Py_ssize_t* held_at
    cdef char* data_at
    cdef char* live_at = NULL
    cdef char* ident_at = NULL
    cdef Column stores
    live = ident = None
    while True:
        rows = _top
        held_count = _closed.count + len(_waiting)
        data = np.empty((rows,) + column.spec.shape, column.spec.dtype)
        held = np.empty(held_count, np.intp)
        data_at = _data(data)
        held_at = <Py_ssize_t*>_data(held)
        if masks >= WITH_LIVE:
            live = np.empty(rows, np.bool_)
            live_at = _data(live)
        if masks == WITH_IDENT:
            ident = np.empty(rows, np.uint64)
            ident_at = _data(ident)
        # From here on no Python code runs.
        if _top != rows or _closed.count + len(_waiting) != held_count:
            continue
        if column.kind != KIND_VIEW:
            memcpy(data_at, column.flat, rows * column.row_bytes)
        else:
            k = start = 0
            while start < rows:
                length = min(_chunk_rows(k), rows - start)
                memcpy(data_at + start * column.row_bytes, column.bases[k],
                       length * column.row_bytes)
                start += length
                k += 1
        for i in range(_closed.count):
            held_at[i] = _closed.rows[i]
        i = _closed.count
        for row in _waiting:
            held_at[i] = row
            i += 1
        if masks >= WITH_LIVE:
            stores = mask(group)
            memcpy(live_at, stores.flat, rows)
        if masks == WITH_IDENT:
            memcpy(ident_at, _ident.flat, rows * sizeof(uint64_t))
        return Snapshot(column.spec, column.wide, data, held, live, ident)


cdef Py_ssize_t narrow_rows = _NARROW_ROWS


cdef object counter_sum(Column column):
    """Return the exact sum of a counter column (int64, never wide: every value below NARROW =
    2**40), or None beyond 2**22 rows, where int64 could overflow (see _typed.total).

    Summed in C in one span that runs no Python code, where snapshot() would copy the column
    for numpy: every row is one instant's, with no copy. Rows that hold values but no live
    container (closed, not torn down; torn down, reached by a view) are taken back out."""
    cdef Py_ssize_t i, rows = _top
    cdef const int64_t* values = <const int64_t*>column.flat
    cdef int64_t a = 0, b = 0, c = 0, d = 0  # four sums: the loop pipelines (and vectorizes)
    if rows >= narrow_rows:
        return None
    for i in range(0, rows - 3, 4):
        a += values[i]
        b += values[i + 1]
        c += values[i + 2]
        d += values[i + 3]
    for i in range(rows - rows % 4, rows):
        a += values[i]
    for i in range(_closed.count):
        a -= values[_closed.rows[i]]
    for row in _waiting:
        a -= values[<Py_ssize_t>row]
    return a + b + c + d


cdef Column add_column(object spec, str group):
    """Make a typed variable's column, at its default in every container storing it."""
    cdef Py_ssize_t i, row
    cdef Column column = _add(_new_column(spec, group))
    cdef Column stores
    # From _add() on no Python code runs: the default goes to exactly the rows storing it now.
    if column.fill is not None:
        stores = mask(group)
        for row in range(_top):
            if stores.flat[row]:
                memcpy(cell(column, row), <char*>column.fill, column.row_bytes)
        for i in range(_closed.count):  # closed, not torn down: still read by those inside
            if group not in _closed_shared.get(_closed.rows[i], ()):
                memcpy(cell(column, _closed.rows[i]), <char*>column.fill, column.row_bytes)
    return column


cdef int drop_column(Column column) except -1:
    """Forget a dead variable's column (views of it keep its chunks alive)."""
    _columns.remove(column)
    return 0


cdef int _grow() except -1:
    """Add a chunk's rows to every column. Passes until one finds every column grown: that
    pass ran no Python code, so no column added or dropped meanwhile (by a finalizer) is
    missed, and the capacity is raised in the same span."""
    global _chunk_count, _capacity
    cdef Py_ssize_t count = _chunk_count + 1
    cdef Py_ssize_t i
    cdef bint grew = True
    cdef Column column
    while grew:
        grew = False
        i = 0
        while i < len(_columns):  # re-read: the list can change while a column grows
            # A reference of our own: growing runs Python code (and numpy lets other threads
            # run), during which the variable can be dropped and the list's entry with it.
            column = <Column>_columns[i]
            if column.grow_to(count):
                grew = True
            i += 1
    if count > _chunk_count:
        _chunk_count = count
        _capacity = _chunk_start(count)
    return 0


cdef int take_row(uint64_t ident, frozenset shared) except -1:
    """Return a zeroed row for a new live container, at the defaults where it stores."""
    global _top
    cdef Column column
    cdef int row
    if shared:
        for group in shared:
            if group not in _stores:  # from now on this group has its own mask
                new_mask = _new_mask()  # can run Python code
                if group in _stores:  # made meanwhile
                    _columns.remove(new_mask)
                else:  # no Python code since _new_mask(): the live rows copied are current
                    memcpy(new_mask.flat, _live.flat, _top)
                    _stores[group] = new_mask
    # From here on no Python code runs but in _grow(), after which the state is read anew.
    if _free.count:
        _free.count -= 1
        row = _free.rows[_free.count]
    else:
        while _top >= _capacity:
            _grow()
        row = _top
        _top += 1
    for column in _columns:
        if column.fill is not None and (not shared or column.group not in shared):
            memcpy(cell(column, row), <char*>column.fill, column.row_bytes)
    cell(_live, row)[0] = 1
    (<uint64_t*>cell(_ident, row))[0] = ident
    if _stores:
        for group, stores in _stores.items():
            cell(<Column>stores, row)[0] = group not in shared
    return row


cdef int close_row(int row, frozenset shared) except -1:
    """Take a closed container's row out of the live rows (its values stay until teardown)."""
    cell(_live, row)[0] = 0
    if _stores:
        for stores in _stores.values():
            cell(<Column>stores, row)[0] = 0
    rows_push(&_closed, row)
    if shared:
        _closed_shared[row] = shared
    return 0


cdef int release_row(int row) except -1:
    """Zero a torn-down container's row; reuse it once no view of it is left."""
    if rows_remove(&_closed, row) and _closed_shared:
        _closed_shared.pop(row, None)
    _zero(row)
    if _lease_refs and row in _lease_refs:
        _waiting.add(row)
    else:
        rows_push(&_free, row)
    return 0


cdef void _zero(int row) noexcept:
    cdef Column column
    for column in _columns:
        memset(cell(column, row), 0, column.row_bytes)


cdef object make_row_view(Column column, int row):
    """Return a new view of a row's copy; the row is not reused while one is alive."""
    view, lease = make_view(column, row)
    _leases.add(row, lease)
    return view

