# cython: language_level=3
"""The compiled core's typed storage: a row for every container, a column for every typed
variable. _typed.py describes the layout; _rows_py.py is the readable reference."""

from libc.stdint cimport uint64_t

cdef enum:
    # What get() returns, as in _typed.py (INT, UINT, FLOAT, BOOL, VIEW).
    KIND_INT = 0
    KIND_UINT = 1
    KIND_FLOAT = 2
    KIND_BOOL = 3
    KIND_VIEW = 4
    # The chunk geometry, as in _typed.py: 64 rows, doubling up to 65536, then 65536 each.
    FIRST_CHUNK_ROWS = 64
    DOUBLINGS = 10
    GEOMETRIC_ROWS = 64 * 1023
    MAX_CHUNK_SHIFT = 16

cdef extern from *:
    """
    static inline int pc_top_bit(unsigned long long x) { return 63 - __builtin_clzll(x); }
    """
    int pc_top_bit(unsigned long long x) noexcept


cdef class Column:
    cdef readonly object spec  # the _typed.TypedSpec
    cdef readonly str group
    cdef readonly list chunks  # numpy arrays: [flat] for a scalar; chunks that never move
    cdef char* flat  # a scalar column's one array's data (moves when it grows), for the hot paths
    cdef char** bases  # a view column's chunks[k]'s data (never moves)
    cdef Py_ssize_t row_bytes
    cdef int kind
    cdef int itemsize
    cdef bint counter  # a scalar int64 column not wide: the kind the hot paths inline
    cdef readonly bint wide  # a 64-bit scalar column once held a value beyond _typed.NARROW
    # The values an INT or UINT column's fast paths store: its dtype's range, but for a 64-bit
    # column not wide yet, the narrow range, so that the first wide value takes the slow path
    # (a wide uint64 column: high = -1, no limit).
    cdef long long low
    cdef long long high
    cdef bytes fill  # the default's bytes; None when they are all zero

    cdef int grow_to(self, Py_ssize_t chunk_count) except -1
    cdef int set_spec(self, object spec) except -1
    cdef int note(self, object value) except -1
    cdef int _set_range(self) except -1


cdef inline char* cell(Column column, Py_ssize_t row) noexcept:
    """Return the address of row's copy: in the flat array, or chunk k, index i, as
    _typed.locate(). Valid until Python code runs (a flat array can be reallocated)."""
    cdef Py_ssize_t k, index
    if column.kind != KIND_VIEW:
        return column.flat + row * column.row_bytes
    if row < GEOMETRIC_ROWS:
        k = pc_top_bit((row >> 6) + 1)
        index = row - FIRST_CHUNK_ROWS * ((<Py_ssize_t>1 << k) - 1)
    else:
        index = row - GEOMETRIC_ROWS
        k = DOUBLINGS + (index >> MAX_CHUNK_SHIFT)
        index &= (1 << MAX_CHUNK_SHIFT) - 1
    return column.bases[k] + index * column.row_bytes


cdef int take_row(uint64_t ident, frozenset shared) except -1
cdef int close_row(int row, frozenset shared) except -1
cdef int release_row(int row) except -1
cdef Column add_column(object spec, str group)
cdef int drop_column(Column column) except -1
cdef Column mask(str group)
cdef enum:
    # What snapshot() copies besides the column and the held rows.
    DATA_ONLY = 0
    WITH_LIVE = 1  # the mask of the rows of live containers storing the group
    WITH_IDENT = 2  # that mask and the container ids


cdef object snapshot(Column column, str group, int masks)
cdef object counter_sum(Column column)
cdef object make_row_view(Column column, int row)
