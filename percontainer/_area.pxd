# cython: language_level=3
"""A container's area: the slots of object variables, owned references, NULL where unset.

The dense part is one flat PyMem array over a window of slots (`lo` .. `lo + size - 1`): a
read is one subtraction, one unsigned compare and one load. The window starts where the
container first stores and grows toward what it touches next, so a container that touched 20
variables spends 160 bytes on them whether they were declared first or after 10,000 others
(other modules' variables it never uses). A slot far from the window (a late-declared
variable, one of thousands it never uses) goes into `sparse`, a small open-addressing table of
(slot, value) pairs, so the memory a container costs grows with what it touches, never with
what is declared. When the table's slots are dense enough, the window grows over them (or
moves to them, if they outnumber its own) and they move into the flat part.

Pointers returned by area_slot() are valid until the next area_slot() or area_free() on the
same area: callers store through them before running any Python code.
"""

from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF
from libc.string cimport memset

cdef extern from *:
    """
    typedef struct { Py_ssize_t slot; PyObject *value; } pc_entry;
    typedef struct {
        Py_ssize_t mask, used, top, bottom; pc_entry entries[1];
    } pc_sparse;
    #define PC_SPARSE_BYTES(capacity) \
        (sizeof(pc_sparse) + ((capacity) - 1) * sizeof(pc_entry))
    """
    ctypedef struct pc_entry:
        Py_ssize_t slot  # -1: never used
        PyObject* value  # NULL: unset (the entry keeps its slot until the table is rebuilt)
    ctypedef struct pc_sparse:
        Py_ssize_t mask  # capacity - 1; the capacity is a power of two
        Py_ssize_t used  # entries whose slot is not -1
        Py_ssize_t top  # the highest slot an entry has had
        Py_ssize_t bottom  # the lowest slot an entry has had
        pc_entry entries[1]
    size_t PC_SPARSE_BYTES(Py_ssize_t capacity)

ctypedef struct Area:
    PyObject** flat  # the values of slots lo .. lo + size - 1
    pc_sparse* sparse
    int lo  # the first slot in flat (ints: the struct stays 24 bytes)
    int size  # slots in flat

cdef enum:
    SPARSE_MIN = 4  # entries in a new sparse table
    FLAT_SLACK = 16  # the window may grow to span 2 * size + FLAT_SLACK slots
    DENSE = 4  # ... or over the table's slots once 1 in DENSE of the span is touched
    MAX_SLOT = 1 << 29  # windows stay well within an int
    # The slot of a variable not initialised (a PerContainer made by __new__ alone): beyond
    # every area, so reads miss with no check of their own, and area_slot() refuses it.
    NO_SLOT = 1 << 30


cdef inline PyObject* sparse_get(pc_sparse* table, Py_ssize_t slot) noexcept:
    cdef Py_ssize_t i = slot & table.mask
    while True:
        if table.entries[i].slot == slot:
            return table.entries[i].value
        if table.entries[i].slot == -1:
            return NULL
        i = (i + 1) & table.mask


cdef inline PyObject* area_get(Area* area, Py_ssize_t slot) noexcept:
    """Return the value at slot, borrowed, or NULL if unset."""
    cdef size_t i = <size_t>(slot - area.lo)  # below lo wraps to a huge index: one compare
    if i < <size_t>area.size:
        return area.flat[i]
    if area.sparse != NULL:
        return sparse_get(area.sparse, slot)
    return NULL


cdef inline pc_sparse* sparse_new(Py_ssize_t capacity) noexcept:
    cdef pc_sparse* table = <pc_sparse*>PyMem_Calloc(1, PC_SPARSE_BYTES(capacity))
    cdef Py_ssize_t i
    if table != NULL:
        table.mask = capacity - 1
        table.bottom = MAX_SLOT
        for i in range(capacity):
            table.entries[i].slot = -1
    return table


cdef inline PyObject** sparse_entry(pc_sparse* table, Py_ssize_t slot) noexcept:
    """Return the value address for slot: its entry, or a free one claimed for it."""
    cdef Py_ssize_t i = slot & table.mask
    while table.entries[i].slot != slot:
        if table.entries[i].slot == -1:
            table.entries[i].slot = slot
            table.used += 1
            if slot > table.top:
                table.top = slot
            if slot < table.bottom:
                table.bottom = slot
            break
        i = (i + 1) & table.mask
    return &table.entries[i].value


cdef inline Py_ssize_t sparse_live(pc_sparse* table) noexcept:
    """Return the number of set entries."""
    cdef Py_ssize_t i, live = 0
    for i in range(table.mask + 1):
        if table.entries[i].value != NULL:
            live += 1
    return live


cdef inline Py_ssize_t sparse_capacity(Py_ssize_t live, Py_ssize_t per_entry) noexcept:
    """Return the capacity that holds `live` entries (and one more) at a load of 1 / per_entry
    or less."""
    cdef Py_ssize_t capacity = SPARSE_MIN
    while capacity < per_entry * (live + 1):
        capacity <<= 1
    return capacity


cdef inline int sparse_rebuild(Area* area, Py_ssize_t capacity) except -1:
    """Move the set entries into a new table of `capacity` (dropping unset ones)."""
    cdef pc_sparse* old = area.sparse
    cdef pc_sparse* table = sparse_new(capacity)
    cdef Py_ssize_t i
    if table == NULL:
        raise MemoryError()
    if old != NULL:
        for i in range(old.mask + 1):
            if old.entries[i].value != NULL:
                sparse_entry(table, old.entries[i].slot)[0] = old.entries[i].value
        PyMem_Free(old)
    area.sparse = table
    return 0


cdef inline int sparse_to_flat(Area* area) noexcept:
    """Move the table's entries inside the window into flat; free the table if none is left."""
    cdef Py_ssize_t i, slot, left = 0
    if area.sparse == NULL:
        return 0
    for i in range(area.sparse.mask + 1):
        slot = area.sparse.entries[i].slot
        if area.sparse.entries[i].value == NULL:
            continue
        if <size_t>(slot - area.lo) < <size_t>area.size:
            area.flat[slot - area.lo] = area.sparse.entries[i].value
            area.sparse.entries[i].value = NULL
        else:
            left += 1
    if left == 0:
        PyMem_Free(area.sparse)
        area.sparse = NULL
    return 0


cdef inline int flat_cover(Area* area, Py_ssize_t lo, Py_ssize_t hi) except -1:
    """Move the window to slots lo .. hi - 1: the table's entries inside it move into flat,
    and flat's values outside it (a window moved onto a denser cluster) into the table."""
    cdef Py_ssize_t size = hi - lo, i, slot, outside = 0
    cdef PyObject** old = area.flat
    cdef Py_ssize_t old_lo = area.lo, old_size = area.size
    cdef PyObject** flat
    if old_size == 0 or (lo == old_lo and size >= old_size):  # grown at the top: in place
        flat = <PyObject**>PyMem_Realloc(old, size * sizeof(PyObject*))
        if flat == NULL:
            raise MemoryError()
        memset(&flat[old_size], 0, (size - old_size) * sizeof(PyObject*))
        area.flat, area.lo, area.size = flat, <int>lo, <int>size
        return sparse_to_flat(area)
    # Moved onto another cluster: a new flat array, and a new table for whatever is left
    # outside the window (flat's values now outside it, the table's not taken in).
    cdef pc_sparse* old_table = area.sparse
    cdef pc_sparse* table = NULL
    for i in range(old_size):
        if old[i] != NULL and not lo <= old_lo + i < hi:
            outside += 1
    if old_table != NULL:
        for i in range(old_table.mask + 1):
            slot = old_table.entries[i].slot
            if old_table.entries[i].value != NULL and not lo <= slot < hi:
                outside += 1
    flat = <PyObject**>PyMem_Calloc(size, sizeof(PyObject*))
    if outside and flat != NULL:
        table = sparse_new(sparse_capacity(outside, 2))  # at most half full as they go in
        if table == NULL:
            PyMem_Free(flat)
            flat = NULL
    if flat == NULL:
        raise MemoryError()
    # Nothing can fail from here on: every value moves exactly once.
    for i in range(old_size):
        if old[i] != NULL:
            slot = old_lo + i
            if lo <= slot < hi:
                flat[slot - lo] = old[i]
            else:
                sparse_entry(table, slot)[0] = old[i]
    if old_table != NULL:
        for i in range(old_table.mask + 1):
            slot = old_table.entries[i].slot
            if old_table.entries[i].value == NULL:
                continue
            if lo <= slot < hi:
                flat[slot - lo] = old_table.entries[i].value
            else:
                sparse_entry(table, slot)[0] = old_table.entries[i].value
    PyMem_Free(old)
    PyMem_Free(old_table)
    area.flat, area.lo, area.size, area.sparse = flat, <int>lo, <int>size, table
    return 0


cdef inline PyObject** area_slot(Area* area, Py_ssize_t slot) except NULL:
    """Return the address of slot's value (NULL there if unset), making room for it."""
    cdef pc_sparse* table
    cdef Py_ssize_t lo = area.lo, hi = area.lo + area.size, low, high, live
    if <size_t>(slot - lo) < <size_t>area.size:
        return &area.flat[slot - lo]
    if slot >= MAX_SLOT:
        if slot == NO_SLOT:
            raise TypeError("this PerContainer was not initialised (PerContainer.__new__ without "
                            "__init__); make one with PerContainer(...)")
        raise OverflowError(f"slot {slot} is beyond {MAX_SLOT} declared variables")
    # Windows start and end on even slots: pymalloc sizes go by 16 bytes.
    if area.size == 0:
        lo, hi = slot, slot
    low, high = min(lo, slot) & ~1, (max(hi, slot + 1) + 1) & ~1
    if high - low <= 2 * area.size + FLAT_SLACK:  # near the window: extend it
        flat_cover(area, low, high)
        return &area.flat[slot - area.lo]
    table = area.sparse
    if table != NULL and sparse_get(table, slot) == NULL and 2 * (table.used + 1) > table.mask + 1:
        # The table is full: before it grows, see whether flat is cheaper (8 bytes a slot,
        # against 32 to 64 an entry) for what it holds, with or without the window.
        live = sparse_live(table) + 1
        low = min(low, table.bottom) & ~1
        high = (max(high, table.top + 1) + 1) & ~1
        if high - low < DENSE * (live + area.size):  # the window grows over the table
            flat_cover(area, low, high)
            return &area.flat[slot - area.lo]
        low = min(slot, table.bottom) & ~1
        high = (max(slot, table.top) + 2) & ~1
        if live > area.size and high - low < DENSE * live:  # a denser cluster: move there
            flat_cover(area, low, high)
            return &area.flat[slot - area.lo]
        sparse_rebuild(area, sparse_capacity(live, 4))  # a quarter full: room to grow
    elif table == NULL:
        sparse_rebuild(area, SPARSE_MIN)
    return sparse_entry(area.sparse, slot)


cdef inline PyObject* area_take(Area* area, Py_ssize_t slot) noexcept:
    """Unset slot and return its value (the area's reference, now the caller's), or NULL."""
    cdef PyObject** where
    cdef PyObject* value
    if <size_t>(slot - area.lo) < <size_t>area.size:
        where = &area.flat[slot - area.lo]
    elif area.sparse != NULL and sparse_get(area.sparse, slot) != NULL:
        where = sparse_entry(area.sparse, slot)
    else:
        return NULL
    value = where[0]
    where[0] = NULL
    return value


cdef inline PyObject* area_next(Area* area, Py_ssize_t* position, Py_ssize_t* slot) noexcept:
    """Iterate over the set slots: start with position 0; NULL when done. Borrowed values."""
    cdef Py_ssize_t i
    cdef PyObject* value
    while position[0] < area.size:
        i = position[0]
        position[0] += 1
        if area.flat[i] != NULL:
            slot[0] = area.lo + i
            return area.flat[i]
    if area.sparse == NULL:
        return NULL
    while position[0] - area.size <= area.sparse.mask:
        i = position[0] - area.size
        position[0] += 1
        value = area.sparse.entries[i].value
        if value != NULL:
            slot[0] = area.sparse.entries[i].slot
            return value
    return NULL


cdef inline void area_free(Area* area) noexcept:
    """Detach the area's storage, then drop every value and free it.

    The area is empty before the first value is dropped: a dying value's __del__ finds
    nothing half-freed."""
    cdef Area detached = area[0]
    cdef Py_ssize_t position = 0, slot
    cdef PyObject* value
    area.flat = NULL
    area.sparse = NULL
    area.lo = 0
    area.size = 0
    while True:
        value = area_next(&detached, &position, &slot)
        if value == NULL:
            break
        Py_XDECREF(value)
    PyMem_Free(detached.flat)
    PyMem_Free(detached.sparse)
