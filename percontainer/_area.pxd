# cython: language_level=3
"""A container's area: the slots of object variables, owned references, NULL where unset,
and the number of its row in the typed variables' storage (see _typed.py).

The dense low part is one flat PyMem array (`flat`, `size` slots): a read is one compare and
one load, and a container that touched its first 20 variables spends 160 bytes on them. A slot
far beyond what the container touched so far (a late-declared variable, or one of thousands it
never uses) goes into `sparse`, a small open-addressing table of (slot, value) pairs, so the
memory a container costs grows with what it touches, never with what is declared. When the
flat part grows over slots held in `sparse`, they move into it.

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
        Py_ssize_t mask, used, top; pc_entry entries[1];
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
        pc_entry entries[1]
    size_t PC_SPARSE_BYTES(Py_ssize_t capacity)

ctypedef struct Area:
    PyObject** flat
    pc_sparse* sparse
    int size  # slots in flat (an int, so that `row` fits in what was padding)
    int row  # the container's row in the typed variables' columns; -1 for none

cdef enum:
    SPARSE_MIN = 4  # entries in a new sparse table
    FLAT_SLACK = 16  # flat may grow to cover 2 * size + FLAT_SLACK slots
    DENSE = 4  # ... or to cover slot s once the table holds s / DENSE entries
    MAX_SLOT = 1 << 29  # flat sizes stay well within an int
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
    if slot < area.size:
        return area.flat[slot]
    if area.sparse != NULL:
        return sparse_get(area.sparse, slot)
    return NULL


cdef inline pc_sparse* sparse_new(Py_ssize_t capacity) noexcept:
    cdef pc_sparse* table = <pc_sparse*>PyMem_Calloc(1, PC_SPARSE_BYTES(capacity))
    cdef Py_ssize_t i
    if table != NULL:
        table.mask = capacity - 1
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
            break
        i = (i + 1) & table.mask
    return &table.entries[i].value


cdef inline Py_ssize_t sparse_capacity(pc_sparse* table) noexcept:
    """Return the capacity that holds table's set entries at a load of a quarter or less."""
    cdef Py_ssize_t i, live = 0, capacity = SPARSE_MIN
    for i in range(table.mask + 1):
        if table.entries[i].value != NULL:
            live += 1
    while capacity < 4 * (live + 1):
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


cdef inline int flat_grow(Area* area, Py_ssize_t size) except -1:
    """Grow flat to `size` slots and move the sparse entries it now covers into it."""
    cdef PyObject** flat = <PyObject**>PyMem_Realloc(area.flat, size * sizeof(PyObject*))
    cdef Py_ssize_t i, slot
    if flat == NULL:
        raise MemoryError()
    memset(&flat[area.size], 0, (size - area.size) * sizeof(PyObject*))
    area.flat = flat
    area.size = size
    cdef Py_ssize_t left = 0
    if area.sparse != NULL:
        for i in range(area.sparse.mask + 1):
            slot = area.sparse.entries[i].slot
            if area.sparse.entries[i].value == NULL:
                continue
            if slot < size:
                flat[slot] = area.sparse.entries[i].value
                area.sparse.entries[i].value = NULL
            else:
                left += 1
        if left == 0:  # every entry moved: the table goes
            PyMem_Free(area.sparse)
            area.sparse = NULL
    return 0


cdef inline PyObject** area_slot(Area* area, Py_ssize_t slot) except NULL:
    """Return the address of slot's value (NULL there if unset), making room for it."""
    cdef pc_sparse* table
    if slot < area.size:
        return &area.flat[slot]
    if slot >= MAX_SLOT:
        if slot == NO_SLOT:
            raise TypeError("this PerContainer was not initialised (PerContainer.__new__ without "
                            "__init__); make one with PerContainer(...)")
        raise OverflowError(f"slot {slot} is beyond {MAX_SLOT} declared variables")
    if slot < 2 * area.size + FLAT_SLACK:  # near the flat part: extend it
        flat_grow(area, (slot + 2) & ~1)  # an even count: pymalloc sizes go by 16 bytes
        return &area.flat[slot]
    table = area.sparse
    if table != NULL and max(slot, table.top) < DENSE * (table.used + 1):
        # The table holds a dense share of the slots up to its top: flat is cheaper (8 bytes
        # a slot, against 16 an entry at half load), and everything moves into it.
        flat_grow(area, (max(slot, table.top) + 2) & ~1)
        return &area.flat[slot]
    if table == NULL:
        sparse_rebuild(area, SPARSE_MIN)
    elif sparse_get(table, slot) == NULL and 2 * (table.used + 1) > table.mask + 1:
        sparse_rebuild(area, sparse_capacity(table))  # keep the load at one half or less
    return sparse_entry(area.sparse, slot)


cdef inline PyObject* area_take(Area* area, Py_ssize_t slot) noexcept:
    """Unset slot and return its value (the area's reference, now the caller's), or NULL."""
    cdef PyObject** where
    cdef PyObject* value
    if slot < area.size:
        where = &area.flat[slot]
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
            slot[0] = i
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
    area.size = 0
    while True:
        value = area_next(&detached, &position, &slot)
        if value == NULL:
            break
        Py_XDECREF(value)
    PyMem_Free(detached.flat)
    PyMem_Free(detached.sparse)
