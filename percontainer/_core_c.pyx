# cython: language_level=3, embedsignature=True, embedsignature.format=clinic
# cython: binding=False, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# cython: auto_pickle=False
# (clinic: the signatures go to __text_signature__, where inspect.signature() and help() read them)
"""The compiled core: the same names and semantics as _core_py.py, which is the reference.

Storage (the kernel's per-cpu area): every container owns an *area* (_area.pxd) of
PyObject* slots allocated with PyMem, so tracemalloc sees them. A variable owns a fixed *slot*,
the same in every container; reading it is current -> area.flat[slot]. Containers are kept
lean, since a server may hold many thousands: no GC header (every cycle through a container
is cut by close(), and a live container is held by the registry anyway), no weakref slot,
rarely used fields in a side object, and the registry is a list threaded through them.
"""

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_AsDouble, PyFloat_CheckExact, PyFloat_FromDouble
from cpython.long cimport (
    PyLong_AsLongLong, PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong, PyLong_CheckExact,
    PyLong_FromLongLong, PyLong_FromUnsignedLongLong,
)
from libc.math cimport isfinite
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from percontainer._area cimport (
    NO_SLOT, Area, area_free, area_get, area_next, area_slot, area_take,
)
from percontainer._rows_c cimport (
    KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_UINT, KIND_VIEW, Column, add_column, cell, close_row,
    counter_sum,
    DATA_ONLY, WITH_IDENT, WITH_LIVE, drop_column, make_row_view, release_row, snapshot, take_row,
)

import contextvars
import functools
import heapq
import inspect
import itertools
import os
import threading
import weakref
from types import CoroutineType, GenericAlias

from ._checks import (
    check_callable, check_declaration, check_share, decorated_name, not_copyable, not_initialised,
)
from ._config import DISABLED
from ._deferred import Deferred
from ._errors import ContainerClosedError, ContainerError, foreign_current, report_unraisable
from ._flows import current_greenlet, cycle_error, green_event
from ._typed import check_redeclaration, maximum, mean, minimum, spec_for, total, values

cdef extern from "Python.h":
    # Only the fields read here; the struct is CPython's (cpython/pystate.h, 3.7 to 3.13).
    ctypedef struct PyThreadState:
        uint64_t id
        uint64_t context_ver
    object PyContextVar_New(const char* name, PyObject* default_value)
    int PyContextVar_Get(object var, PyObject* default_value, PyObject** value) except -1
    object PyContextVar_Set(object var, object value)
    int PyContextVar_Reset(object var, object token)  # -1 with an error set: see _exit_failed
    bint PyErr_ExceptionMatches(object exc)
    void PyErr_Clear()

cdef extern from *:
    """
    /* The calling thread's state (every caller holds the GIL, so it is never NULL): without
       PyThreadState_Get()'s check for NULL where CPython exports a call that skips it. */
    #if PY_VERSION_HEX >= 0x030D0000
    #define pc_tstate() PyThreadState_GetUnchecked()
    #elif PY_VERSION_HEX >= 0x030C0000
    #define pc_tstate() _PyThreadState_UncheckedGet()
    #else
    #define pc_tstate() PyThreadState_Get()
    #endif
    """
    PyThreadState* pc_tstate() noexcept

cdef extern from *:
    # add(): a counter's int that nothing but the area references (refcount 1) is bumped in
    # place, the way CPython itself appends to a str with no other reference: no one can
    # observe the change, and the add costs no allocation. Only positive one-digit ints
    # (256 < n < 2**30); everything else takes PyNumber_Add. The int layouts: 3.10/3.11 keep
    # the digit count in ob_size; 3.12/3.13 keep it, with the sign, in long_value.lv_tag (a
    # positive one-digit int: 1 << _PyLong_NON_SIZE_BITS). Both are read from the headers at
    # build time. Off from 3.14, where a refcount of 1 no longer proves that nobody else holds
    # the int (the interpreter's borrowed stack references, LOAD_FAST_BORROW), and on
    # free-threaded builds, where another thread may read it meanwhile.
    """
    #if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
    #define PC_INT_IN_PLACE 1
    #if PY_VERSION_HEX >= 0x030C0000
    #define PC_DIGIT0(op) (((PyLongObject *)(op))->long_value.ob_digit[0])
    #define PC_ONE_DIGIT(op) \
        (((PyLongObject *)(op))->long_value.lv_tag == ((uintptr_t)1 << _PyLong_NON_SIZE_BITS))
    #else
    #define PC_DIGIT0(op) (((PyLongObject *)(op))->ob_digit[0])
    #define PC_ONE_DIGIT(op) (Py_SIZE(op) == 1)
    #endif
    #else
    #define PC_INT_IN_PLACE 0
    #endif
    static inline int pc_add_in_place(PyObject *value, PyObject *delta) {
    #if PC_INT_IN_PLACE
        digit sum;
        if (Py_REFCNT(value) != 1 || !PyLong_CheckExact(value) || !PyLong_CheckExact(delta)
                || !PC_ONE_DIGIT(value) || !PC_ONE_DIGIT(delta)) {
            return 0;
        }
        sum = PC_DIGIT0(value) + PC_DIGIT0(delta);
        if (sum >= PyLong_BASE) {
            return 0;
        }
        PC_DIGIT0(value) = sum;
        return 1;
    #else
        return 0;
    #endif
    }
    """
    bint PC_INT_IN_PLACE
    bint pc_add_in_place(PyObject* value, object delta) noexcept

cdef extern from *:
    # A frame whose last reference is the exiting caller's (refcount 1 after the reset) is
    # kept for the next entry: no allocation, no GC tracking, no deallocation. As for
    # PC_INT_IN_PLACE, a refcount of 1 proves that nobody else holds it on GIL builds up to
    # 3.13 only.
    """
    #if PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
    #define PC_FRAME_REUSE 1
    #else
    #define PC_FRAME_REUSE 0
    #endif
    """
    bint PC_FRAME_REUSE
    Py_ssize_t Py_REFCNT(object o)

__all__ = [
    "ENABLED", "Container", "ContainerClosedError", "ContainerError", "PerContainer",
    "containers", "current", "enter_from", "host", "leave", "per_container", "wrap",
]

#: False when PERCONTAINER_DISABLE was set at import: every container uses the host's storage.
ENABLED = not DISABLED
cdef bint enabled = ENABLED

# Life cycle, as in the twin. DEAD is 0 so that a Container made by __new__ alone is unusable.
cdef enum:
    DEAD = 0
    LIVE = 1
    CLOSING = 2  # close() is closing the descendants
    WAITING = 3  # closed; a thread or task is inside, or a child still waits
    TEARDOWN = 4


cdef extern from *:
    """
    /* 2**48 ids: a million containers a second for nine years. The fields end on bytes, so
       reading state or direct is one byte load. */
    typedef struct {
        unsigned long long id : 48;
        unsigned long long state : 8;
        unsigned long long direct : 8;
    } pc_ident;
    """
    ctypedef struct pc_ident:
        uint64_t id  # never reused; 0: the host, or one made by __new__ alone
        unsigned char state  # DEAD, LIVE, CLOSING, WAITING or TEARDOWN
        # 1 while live with no group shared: the fast paths use this area with no other
        # check. 0 when a group is shared (look up the storing container) or once dead
        # (raise); and 0 in a Container made by __new__ alone, which is unusable.
        unsigned char direct


@cython.final
cdef class _Unset:
    def __repr__(self):
        return "<unset>"


cdef object _UNSET = _Unset()


@cython.final
cdef class _Record:
    """One declared variable: its slot and how to make its value."""
    cdef readonly str name
    cdef readonly str group
    cdef Py_ssize_t slot
    cdef unsigned long long seq  # declaration order, for exit hooks (slots are reused)
    cdef object default
    cdef bint has_default
    cdef object factory
    cdef object on_exit
    cdef Column column  # a typed variable's storage
    # A weakref to the PerContainer last bound to it: what unpickling its name returns (not a
    # strong reference: the record lives only while a PerContainer does).
    cdef object variable
    cdef object __weakref__


# The variable registry (cold paths only; every operation on it is atomic under the GIL since
# its keys are str and int; declarations take _declare_lock). A record lives while a
# PerContainer refers to it. A slot is claimed in _new_record and freed by _release, each in
# a span that runs no Python code, so no two live records ever hold the same slot.
cdef list _record_refs = []  # slot -> weakref to its _Record, or None
cdef list _free_slots = []  # heap: reuse the lowest slot first, keeping areas short
cdef dict _by_name = {}
cdef set _groups = {"default"}
cdef object _declaration_seq = itertools.count()

cdef uint64_t _next_id = 0
cdef uint64_t MAX_ID = 1ULL << 48  # the width of pc_ident.id


cdef extern from *:
    # CPython's ContextVar object (struct _pycontextvarobject in Include/internal/
    # pycore_context.h), the same on 3.10 to 3.13 builds with a GIL; _check_var_cache() checks
    # the layout at import. Its cache (var_cached: the value in the context the thread state
    # with id var_cached_tsid was in at context_ver var_cached_tsver) is what PyContextVar_Get
    # reads first, and every set and reset of the var rewrites it, whoever calls them: so
    # reading it tells the current value with no call and no stale copy of our own.
    """
    #if PY_VERSION_HEX >= 0x030A0000 && PY_VERSION_HEX < 0x030E0000 && !defined(Py_GIL_DISABLED)
    #define PC_VAR_CACHE 1
    #else
    #define PC_VAR_CACHE 0
    #endif
    typedef struct {
        PyObject_HEAD
        PyObject *var_name;
        PyObject *var_default;
        PyObject *var_cached;
        uint64_t var_cached_tsid;
        uint64_t var_cached_tsver;
        Py_hash_t var_hash;
    } pc_contextvar;
    """
    ctypedef struct pc_contextvar:
        PyObject* var_cached
        uint64_t var_cached_tsid
        uint64_t var_cached_tsver
    enum: PC_VAR_CACHE
    ctypedef struct PyTypeObject
    PyTypeObject* Py_TYPE(PyObject* o) noexcept


@cython.final
@cython.no_gc_clear  # __dealloc__ reads `container`: a gc pass must not clear it first
@cython.freelist(32)
cdef class _Frame:
    """What the current-container ContextVar holds: one container and the token that set it.

    An entry (`with c:`, enter_from) counts as one user of its container from _enter to _exit;
    a frame dropped while still entered (its task, Context or generator discarded without
    leaving) stops counting when it is freed, so no caller can leave a container that can
    never be torn down. Frames of hooks and factories (_call_inside) count no user."""
    cdef Container container
    cdef object token
    cdef object below  # the var's value before this frame was set: what a reset restores
    cdef bint entered

    def __dealloc__(self):
        if self.entered:
            self.entered = 0
            _drop_discarded_user(self.container)


# Containers whose last user was an entry dropped unleft (its frame freed), waiting for their
# teardown on the teardown worker: see _deferred.py for why it is not run where the frame dies.
cdef object _due_teardowns = Deferred("the teardown of a discarded entry's container")


cdef int _drop_discarded_user(Container container) noexcept:
    container.users -= 1
    if container.ident.state == WAITING and _unused(container):
        container.ident.state = TEARDOWN
        try:
            _due_teardowns.defer(_teardown_discarded, container)
        except BaseException as error:  # a finalizer has no caller to raise to
            report_unraisable("Exception leaving a discarded entry", error, container)
    return 0


def _teardown_discarded(Container container):
    """The teardown of a discarded entry's container, on the worker: no caller to raise to."""
    if container.ident.state != TEARDOWN:  # only what _drop_discarded_user queued
        return
    for error in _teardown(container, True) or ():
        report_unraisable(f"Exception in the teardown of {container!r}", error, container)


cdef object _current_frame = PyContextVar_New("percontainer.current", NULL)
# The var's cache as the fast paths read it: the var itself once _check_var_cache() found the
# layout mirrored above, else a stand-in that never matches a thread state (every read then
# takes PyContextVar_Get).
cdef pc_contextvar no_cache
no_cache.var_cached = NULL
no_cache.var_cached_tsid = 0  # thread state ids start at 1
cdef pc_contextvar* var_cache = &no_cache
cdef extern from *:
    """
    /* No instances from Python code: the type's __new__, tp_new and construction vectorcall
       go (this module calls its tp_new function directly). */
    static int pc_seal_type(PyTypeObject *type) {
        if (type->tp_dict != NULL && PyDict_DelItemString(type->tp_dict, "__new__") < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                return -1;
            }
            PyErr_Clear();
        }
        type->tp_new = NULL;
        type->tp_vectorcall = NULL;  /* Cython's fast construction calls it directly */
        PyType_Modified(type);
        return 0;
    }
    """
    int pc_seal_type(PyTypeObject* type) except -1


cdef PyTypeObject* frame_type = <PyTypeObject*>_Frame
# Reads take a frame's container with no check, so only this module makes frames: one made
# by Python code (type(frame)() on a frame from copy_context()) would hold None.
pc_seal_type(frame_type)
cdef PyTypeObject* coroutine_type = <PyTypeObject*>CoroutineType  # types holds it for good
# What the var's cache is made to hold where the var has no value (the host is current):
# PyContextVar_Get does not cache a miss, and the host is where most reads outside servers
# run. A frame, so that the fast path needs no second test; set by nobody.
cdef _Frame _HOST_FRAME  # made with the host, below


cdef inline PyObject* _cached_value(PyThreadState* ts) noexcept:
    """Return the var's value in this thread's context from its cache, borrowed; NULL if the
    cache is another context's (or the value was deleted since)."""
    if var_cache.var_cached_tsid == ts.id and var_cache.var_cached_tsver == ts.context_ver:
        return var_cache.var_cached
    return NULL


cdef inline PyObject* _value_now(PyThreadState* ts) noexcept:
    """Return the var's value in this thread's context, borrowed (the context holds it); the
    host's frame where it has none. Never raises."""
    cdef PyObject* value = _cached_value(ts)
    if value != NULL:
        return value
    return _value_uncached(ts)


cdef PyObject* _value_uncached(PyThreadState* ts) noexcept:
    cdef PyObject* value
    if PyContextVar_Get(_current_frame, NULL, &value) < 0:  # cannot fail for a ContextVar
        PyErr_Clear()
        value = NULL
    if value != NULL:
        Py_DECREF(<object>value)
        return value
    if var_cache != &no_cache:
        # A miss: cache the host's frame for this context, as a found value is cached.
        var_cache.var_cached = <PyObject*>_HOST_FRAME
        var_cache.var_cached_tsid = ts.id
        var_cache.var_cached_tsver = ts.context_ver
    return <PyObject*>_HOST_FRAME


cdef inline PyObject* _current_ptr() except NULL:
    """Return the current container, borrowed: the hot path of every read and write."""
    cdef PyThreadState* ts = pc_tstate()
    cdef PyObject* value = _cached_value(ts)
    if value != NULL and Py_TYPE(value) == frame_type:
        return <PyObject*>((<_Frame>value).container)
    return _current_slow(ts)


cdef PyObject* _current_slow(PyThreadState* ts) except NULL:
    cdef PyObject* value = _value_now(ts)
    if Py_TYPE(value) == frame_type:
        return <PyObject*>((<_Frame>value).container)
    raise foreign_current(<object>value)  # never trusted: a third party set the var


cdef inline Container _current():
    return <Container>_current_ptr()


cdef inline void _restored(_Frame frame, PyThreadState* ts) noexcept:
    """After a reset of frame's token in thread ts: cache what it restored. CPython's own reset
    to no value (contextvar_del) clears the cache only before its HAMT work, so a ContextVar set
    by a gc pass in between (a finalizer, an exit hook) would leave its value cached, stale:
    the value before frame was set is what the context now holds."""
    if var_cache != &no_cache:
        var_cache.var_cached = <PyObject*>frame.below
        var_cache.var_cached_tsid = ts.id
        var_cache.var_cached_tsver = ts.context_ver
    else:  # PyContextVar_Get reads the cache: make it miss (see _making_reset)
        ts.context_ver += 1


cdef inline int _making_reset(object token, tuple making_now) except -1:
    """_making.reset(token), where making_now is what the token's set() stored.

    A reset to no value clears the var's cache before its HAMT work, which allocates, so that
    before 3.12 a gc pass there may read the var (a factory variable read by a finalizer) and
    cache, borrowed, the value being removed; after the reset nothing else holds it. So the
    caller keeps it alive, and the thread's context version is bumped (what entering a
    context does): every ContextVar cache of this thread misses until read again."""
    _making.reset(token)
    if token.old_value is _MISSING:
        pc_tstate().context_ver += 1
    return 0


cdef str _describe_current():
    """Name what is current, for an error message (never raises)."""
    cdef PyObject* value = _value_now(pc_tstate())
    if Py_TYPE(value) == frame_type:
        return repr((<_Frame>value).container)
    return repr(<object>value)


cdef int _check_var_cache() except -1:
    """Read the var's own cache if CPython's ContextVar has the layout mirrored above."""
    global var_cache
    if not PC_VAR_CACHE:
        return 0
    cdef PyThreadState* ts
    cdef pc_contextvar* var = <pc_contextvar*>_current_frame
    probe = object()
    token = PyContextVar_Set(_current_frame, probe)
    ts = pc_tstate()
    cdef bint same = (var.var_cached == <PyObject*>probe and var.var_cached_tsid == ts.id
                      and var.var_cached_tsver == ts.context_ver)
    PyContextVar_Reset(_current_frame, token)
    if same and var.var_cached == NULL:  # a reset to no value clears the cache
        var_cache = var
    return 0


def _ints_in_place():
    """Return True if add() bumps an unshared int in place and typed reads reuse an int box
    (tests check it is on for 3.10-3.13)."""
    return PC_INT_IN_PLACE


def _frames_reused():
    """Return True if an exited frame nothing else holds is kept for the next entry (tests
    check it is on for 3.10-3.13)."""
    return PC_FRAME_REUSE


def _reads_var_cache():
    """Return True if reads take the ContextVar's cache (tests check it is on for 3.10-3.13)."""
    return var_cache != &no_cache


def current():
    """Return the container current in this thread or asyncio task (the host if none)."""
    return _current()


def containers():
    """Return the live (not closed) containers, the host first, in creation order."""
    return _snapshot(True)


cdef object _call_inside(Container container, object fn, tuple args):
    """Call fn inside container without the closed check (for hooks and factories)."""
    if not enabled:
        return fn(*args)
    cdef PyThreadState* ts = pc_tstate()  # this thread's, for as long as it runs
    cdef _Frame frame = _Frame.__new__(_Frame)
    frame.container = container  # not an entry: it counts no user
    frame.below = <object>_value_now(ts)
    token = PyContextVar_Set(_current_frame, frame)
    try:
        return fn(*args)
    finally:
        if PyContextVar_Reset(_current_frame, token) < 0:
            _exit_failed(container)
        _restored(frame, ts)


async def _run_inside(Container container, coroutine):
    """Await coroutine inside container (what run() and wrap() hand back for a coroutine)."""
    async with container:
        return await coroutine


def enter_from(dict containers, key):
    """Enter the live container containers[key] and return it (leave() leaves it), or return
    None if there is none or it is closed: a registry's lookup and `with` in one call."""
    found = containers.get(key)
    if found is None:
        return None
    if not isinstance(found, Container):
        raise TypeError(f"enter_from() maps keys to Containers, not {type(found).__name__}")
    if (<Container>found).ident.state != LIVE:
        return None
    _enter(<Container>found)
    return found


def leave(Container container):
    """Leave the container that enter_from() (or __enter__) entered in this thread or task."""
    _exit(container)


cdef int _exit_failed(Container container) except -1:
    """Turn a failed reset of the current frame into a ContainerError; no Python try block
    on the hot path."""
    if PyErr_ExceptionMatches(ValueError):  # the token belongs to another context
        PyErr_Clear()
        raise ContainerError(
            f"{container!r} was entered in another thread or task than the one exiting it")
    return -1  # any other error propagates as it is


@cython.final
cdef class _Extra:
    """The fields most containers leave at their defaults, kept out of the container itself."""
    cdef object name
    cdef Container parent
    cdef frozenset shared
    cdef dict owners  # shared group -> the container that stores it
    cdef dict children  # child not yet torn down -> None
    cdef dict owners_for  # frozenset of shared groups -> the owners mapping its children use
    cdef int pins  # pin() calls not yet unpinned (each also counts in the container's users)


cdef frozenset _NO_GROUPS = frozenset()


cdef _Extra _extra(Container c):
    """Return c's side object, making it (with the defaults) if c has none yet."""
    if c.extra is None:
        c.extra = _Extra.__new__(_Extra)
        c.extra.parent = _host
        c.extra.shared = _NO_GROUPS
    return c.extra


@cython.final
@cython.no_gc  # see the module docstring: no cycle through a container outlives close()
@cython.freelist(64)
cdef class Container:
    """Container(name=None, *, parent=None, share=())
--

A tenant: its own copy of every per-container variable."""
    cdef Area area
    cdef pc_ident ident  # id, state and direct in one word: the object stays 80 bytes
    cdef PyObject* prev  # the registry: a list in creation order that holds one reference
    cdef PyObject* next
    cdef _Extra extra  # None: no name, the host as parent, nothing shared, no children
    cdef int row  # the container's row in the typed variables' columns; -1 for none
    cdef int users  # threads and tasks inside (by `with`) and pins; teardown waits for 0

    def __init__(self, name=None, *args, parent=None, share=()):
        global _next_id
        if args:  # Cython's own message would not say what to write instead
            example = "host" if args[0] is _host else "..."
            raise TypeError(f"Container() takes 1 positional argument (the name) but "
                            f"{len(args) + 1} were given: parent and share are keyword-only, as "
                            f"in Container({name!r}, parent={example})")
        if self.ident.id != 0 or self is _host:
            raise TypeError("Container.__init__ may be called once only")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Container name must be a str or None, not {type(name).__name__}")
        if parent is None:
            parent = _current()
        elif not isinstance(parent, Container):
            raise TypeError(f"parent must be a Container, not {type(parent).__name__}")
        cdef Container up = <Container>parent
        cdef frozenset shared = _shared_groups(share)
        cdef dict owners = None
        if shared and enabled:
            owners = _owners(up, shared)
        if up.ident.state != LIVE:
            raise ContainerClosedError(f"cannot create a child of closed {up!r}")
        if _next_id >= MAX_ID:  # ids are never reused
            raise OverflowError(f"every container id up to {MAX_ID} was given out")
        self.ident.id = _next_id
        _next_id += 1
        self.row = take_row(self.ident.id, shared) if enabled else -1
        if up.ident.state != LIVE:  # closed meanwhile: growing the typed storage ran Python code
            release_row(self.row)
            self.row = -1
            raise ContainerClosedError(f"cannot create a child of closed {up!r}")
        cdef _Extra extra = None
        if name is not None or up is not _host or shared:
            extra = _Extra.__new__(_Extra)
            extra.name = name
            extra.parent = up
            extra.shared = shared
            extra.owners = owners
        cdef _Extra up_extra
        if up is not _host:  # the host is never closed, so it needs no list of children
            up_extra = _extra(up)
            if up_extra.children is None:
                up_extra.children = {}
            up_extra.children[self] = None
        self.extra = extra
        self.ident.direct = owners is None
        _link(self)
        self.ident.state = LIVE

    def __dealloc__(self):
        area_free(&self.area)  # empty unless __init__ never ran to the end

    # -- attributes -------------------------------------------------------------------------
    @property
    def id(self):
        """The container's unique id; never reused in the process. The host's is 0."""
        return self.ident.id

    @property
    def name(self):
        """The name given at creation."""
        if self is _host:
            return "host"
        return None if self.extra is None else self.extra.name

    @property
    def parent(self):
        """The container this one was created from; None for the host."""
        if self.ident.id == 0:  # the host, or one not initialised
            return None
        return _host if self.extra is None else self.extra.parent

    @property
    def shared(self):
        """The variable groups this container shares with its parent."""
        return _NO_GROUPS if self.extra is None else self.extra.shared

    @property
    def closed(self):
        """True once close() was called."""
        return self.ident.state != LIVE

    def __repr__(self):
        if self.ident.id == 0 and self is not _host:
            return "<Container not initialised>"
        closed = " closed" if self.ident.state != LIVE else ""
        return f"<Container id={self.ident.id} name={self.name!r}{closed}>"

    # -- entering ---------------------------------------------------------------------------
    def __enter__(self):
        _enter(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        _exit(self)
        return None

    def __reduce_ex__(self, protocol):
        raise TypeError(not_copyable(self))

    def __reduce__(self):
        raise TypeError(not_copyable(self))

    def run(self, fn, /, *args, **kwargs):
        """Call fn(*args, **kwargs) inside this container and return its result (a coroutine
        comes back wrapped, so that its body runs inside the container too when awaited)."""
        # Replaced below by _run_vector, the same without packing the arguments.
        return _run(self, fn, args, kwargs)

    async def __aenter__(self):
        _enter(self)
        return self

    async def __aexit__(self, exc_type, exc, tb):
        _exit(self)
        return None

    @property
    def in_use(self):
        """True while a thread or task is inside (by `with`) or the container is pinned."""
        return self.users > 0

    @property
    def pinned(self):
        """True while a pin() awaits its unpin()."""
        return self.extra is not None and self.extra.pins > 0

    def pin(self):
        """Count one more user without entering: close() tears down only after unpin()."""
        if self.ident.state != LIVE:
            raise ContainerClosedError(f"cannot pin closed {self!r}")
        cdef _Extra extra = _extra(self)
        extra.pins += 1
        self.users += 1

    def unpin(self):
        """Undo one pin(); a container closed meanwhile is torn down by its last user."""
        if self.extra is None or self.extra.pins == 0:
            raise ContainerError(f"unpin() of {self!r} without a matching pin()")
        self.extra.pins -= 1
        _drop_user(self)

    # -- closing ----------------------------------------------------------------------------
    def close(self):
        """Close this container and its live descendants, run exit hooks, drop the values."""
        if self is _host:
            raise ContainerError("the host container cannot be closed")
        if self.ident.id == 0:
            raise TypeError(not_initialised("Container"))
        if self.ident.state != LIVE:
            return
        self.ident.state = CLOSING  # from here on, nothing can enter it or create children in it
        if self.row >= 0:
            close_row(self.row, _NO_GROUPS if self.extra is None else self.extra.shared)
        errors = []
        if self.extra is not None and self.extra.children:
            for child in list(self.extra.children):
                try:
                    child.close()
                except BaseException as error:  # the parent closes whatever a child raised
                    errors.append(error)
        if _unused(self):
            self.ident.state = TEARDOWN
            hook_errors = _teardown(self, True)
            if hook_errors:
                errors.extend(hook_errors)
        else:
            self.ident.state = WAITING
        if errors:
            raise errors[0]


cdef frozenset _shared_groups(object share):
    """Return share as a frozenset of known groups; the checks with messages are _checks'."""
    if share == ():
        return _NO_GROUPS
    if not isinstance(share, str) and isinstance(share, (tuple, list, set, frozenset)):
        groups = frozenset(share)
        if groups <= _groups:
            return groups
    return check_share(share, _groups)  # raises, or takes an iterable of another kind


cdef dict _owners(Container parent, frozenset shared):
    """Return {shared group: the container that stores it} for a child of parent.

    Flattened once: a shared group's owner is the parent's owner. Siblings made with the same
    groups share one mapping (it never changes), so sharing costs a lookup at creation."""
    cdef _Extra extra = _extra(parent) if parent is not _host else None
    cdef dict owners
    if extra is not None and extra.owners_for is not None:
        owners = extra.owners_for.get(shared)
        if owners is not None:
            return owners
    owners = {group: _storage(parent, group) for group in shared}
    if extra is not None:
        if extra.owners_for is None:
            extra.owners_for = {}
        extra.owners_for[shared] = owners
    return owners


cdef inline bint _unused(Container container):
    """Return True when no thread or task is inside and no child awaits teardown."""
    return container.users == 0 and (container.extra is None or not container.extra.children)


# A frame nothing references any more (see PC_FRAME_REUSE), for the next entry to take.
cdef _Frame _spare_frame = None


cdef inline _Frame _take_frame():
    """Return a frame for an entry: the spare one, or a new one."""
    global _spare_frame
    cdef _Frame frame = _spare_frame
    if frame is None:
        return _Frame.__new__(_Frame)
    _spare_frame = None
    return frame


cdef inline void _give_back(_Frame frame) noexcept:
    """Keep an exited frame as the spare if the caller's reference is its last."""
    global _spare_frame
    if not PC_FRAME_REUSE or Py_REFCNT(frame) != 1 or _spare_frame is not None:
        return  # held elsewhere (a context copied inside the entry): it dies when they let go
    frame.token = None
    frame.below = None
    frame.container = _host  # never None: a frame's container is read with no check
    if Py_REFCNT(frame) == 1 and _spare_frame is None:  # dropping the fields ran no code
        _spare_frame = frame


cdef int _enter(Container container) except -1:
    """Make container current in this thread or task (the work of `with container:`)."""
    return _enter_in(container, pc_tstate())


cdef inline int _enter_in(Container container, PyThreadState* ts) except -1:
    """_enter() in thread ts, the calling thread (a thread's state stays where it is for as long
    as the thread runs, so run() reads it once for its enter and exit)."""
    if container.ident.state != LIVE:
        raise ContainerClosedError(f"cannot enter closed {container!r}")
    if not enabled:
        return 0
    cdef _Frame frame = _take_frame()
    frame.container = container
    frame.below = <object>_value_now(ts)
    container.users += 1  # counted first: a close() run by the set below (a gc pass) waits
    frame.entered = 1  # and if the set fails, the frame's death drops the user again
    frame.token = PyContextVar_Set(_current_frame, frame)
    return 0


cdef int _exit(Container container) except -1:
    """Restore what was current before the matching _enter(); change nothing on a mismatch."""
    return _exit_in(container, pc_tstate())


cdef inline int _exit_in(Container container, PyThreadState* ts) except -1:
    """_exit() in thread ts, the calling thread."""
    if not enabled:
        return 0
    cdef PyObject* value = _value_now(ts)
    if Py_TYPE(value) != frame_type or \
            (<_Frame>value).container is not container or not (<_Frame>value).entered:
        raise ContainerError(f"exiting {container!r} while {_describe_current()} is current: "
                             "with-blocks must nest")
    cdef _Frame frame = <_Frame>value
    if PyContextVar_Reset(_current_frame, frame.token) < 0:
        _exit_failed(container)
    _restored(frame, ts)
    frame.entered = 0
    _drop_user(container)
    _give_back(frame)
    return 0


cdef inline int _drop_user(Container container) except -1:
    """Count one user fewer; the last one out of a closed container tears it down."""
    container.users -= 1
    if container.ident.state == WAITING and _unused(container):
        container.ident.state = TEARDOWN
        _teardown(container, False)
    return 0


# Teardown runs exit hooks in rounds, until no value is left without its hook: a bound for
# hooks that make a new value every time.
cdef int _HOOK_ROUNDS = 100


cdef list _teardown(Container container, bint raise_errors):
    """Run the exit hooks in reverse declaration order, then drop every value.

    Every hook runs whatever one raised, and teardown completes. raise_errors (close()):
    return every error, for close() to raise the first. Otherwise (the last user out) report
    Exceptions to sys.unraisablehook, and raise the first other BaseException
    (KeyboardInterrupt, SystemExit, CancelledError: a request to stop) once done."""
    cdef Py_ssize_t position = 0, slot
    errors = None
    if area_next(&container.area, &position, &slot) != NULL:  # no value, no hook to run
        errors = _run_hooks(container, raise_errors)
    # Unlink first, free last: a dying value's __del__ finds a dead, empty container.
    container.ident.state = DEAD
    container.ident.direct = 0
    cdef Container parent = _host
    if container.extra is not None:
        container.extra.owners = None
        parent = container.extra.parent
    cdef int row = container.row
    if row >= 0:
        container.row = -1
        release_row(row)
    area_free(&container.area)
    _unlink(container)
    if parent is not _host and parent.extra.children is not None:
        parent.extra.children.pop(container, None)
        if parent.ident.state == WAITING and _unused(parent):
            # The parent was closed while this one still had someone inside.
            parent.ident.state = TEARDOWN
            try:
                _teardown(parent, False)
            except BaseException as error:  # raised after this one's own
                errors = (errors or []) + [error]
    if errors and not raise_errors:
        raise errors[0]
    return errors


cdef list _run_hooks(Container container, bint raise_errors):
    """Run the exit hooks of the values in container's area, in rounds (see _teardown);
    return the errors to raise."""
    cdef int rounds
    errors = []
    ran = {}
    hooks = None
    for rounds in range(_HOOK_ROUNDS):
        hooks = _hooks_due(container, ran)
        if not hooks:
            break
        for _, on_exit, hook_value in hooks:
            try:
                _call_inside(container, on_exit, (hook_value,))
            except BaseException as error:  # every hook runs, whatever one raised
                if raise_errors or not isinstance(error, Exception):
                    errors.append(error)
                else:
                    report_unraisable(f"Exception in exit hook of {container!r}", error, on_exit)
    else:
        runaway = ContainerError(
            f"exit hooks of {container!r} kept making new values for {_HOOK_ROUNDS} rounds; "
            "the values left were dropped without their hooks")
        if raise_errors:
            errors.append(runaway)
        else:
            report_unraisable(f"Exception in teardown of {container!r}", runaway, container)
    return errors


cdef list _hooks_due(Container container, dict ran):
    """Return (seq, on_exit, value) for each value in container's area whose hook has not run
    yet, latest declared first; note them in `ran` (which keeps them, so ids stay unique).

    Hooks run while the values are readable, so a hook may make new ones (a factory variable
    it reads): teardown asks again until no value is left without its hook."""
    cdef Py_ssize_t position = 0, slot
    cdef PyObject* found
    cdef _Record record
    hooks = []
    while True:
        # Re-read the area each time: the appends below can run Python code (a GC pass).
        found = area_next(&container.area, &position, &slot)
        if found == NULL:
            break
        value = <object>found  # a reference first, before anything that can run Python code
        ref = _record_refs[slot] if slot < len(_record_refs) else None
        record = ref() if ref is not None else None
        if record is None or record.on_exit is None:
            continue
        key = (slot, <Py_ssize_t><PyObject*>value)
        if key in ran:
            continue
        ran[key] = value
        hooks.append((record.seq, record.on_exit, value))
    if len(hooks) > 1:
        hooks.sort(key=_hook_order, reverse=True)
    return hooks


cdef object _hook_order(tuple hook):
    return hook[0]


# The registry of containers that hold storage (LIVE, CLOSING, TEARDOWN): a doubly linked
# list through the containers, in creation order, the host first; it owns one reference to
# each. It is only walked without running Python code (see _snapshot).
cdef PyObject* _first = NULL
cdef PyObject* _last = NULL


cdef void _link(Container container) noexcept:
    global _first, _last
    Py_INCREF(container)
    container.prev = _last
    container.next = NULL
    if _last == NULL:
        _first = <PyObject*>container
    else:
        (<Container>_last).next = <PyObject*>container
    _last = <PyObject*>container


cdef void _unlink(Container container) noexcept:
    """Take container out of the registry and drop the registry's reference (the caller
    holds its own)."""
    global _first, _last
    if container.prev == NULL and _first != <PyObject*>container:
        return  # not linked
    if container.prev == NULL:
        _first = container.next
    else:
        (<Container>container.prev).next = container.next
    if container.next == NULL:
        _last = container.prev
    else:
        (<Container>container.next).prev = container.prev
    container.prev = container.next = NULL
    Py_DECREF(container)


cdef list _snapshot(bint live_only):
    """Return the registered containers (only the LIVE ones if live_only) as a new list.

    Counting and filling run no Python code; allocating the list can (a GC pass), so the
    count is taken again after it and the work redone if the registry changed meanwhile."""
    cdef PyObject* node
    cdef Py_ssize_t count, i
    cdef list result
    while True:
        count = _count(live_only)
        result = PyList_New(count)
        if _count(live_only) != count:
            continue
        node = _first
        i = 0
        while node != NULL:
            if not live_only or (<Container>node).ident.state == LIVE:
                Py_INCREF(<object>node)
                PyList_SET_ITEM(result, i, <object>node)
                i += 1
            node = (<Container>node).next
        return result


cdef Py_ssize_t _count(bint live_only) noexcept:
    cdef PyObject* node = _first
    cdef Py_ssize_t count = 0
    while node != NULL:
        if not live_only or (<Container>node).ident.state == LIVE:
            count += 1
        node = (<Container>node).next
    return count


cdef inline Container _storage(Container c, str group):
    """Return the container whose area holds `group`'s variables for c."""
    if c.ident.state == DEAD:
        return c  # every access through a dead container raises, shared groups included
    if not enabled:
        return _host
    if c.ident.direct:
        return c
    return <Container>c.extra.owners.get(group, c)


cdef Container _new_host():
    cdef Container c = Container.__new__(Container)
    c.row = take_row(0, _NO_GROUPS)
    c.ident.direct = 1
    c.ident.state = LIVE
    _link(c)
    return c


cdef object _run(Container container, object fn, tuple args, dict kwargs):
    _enter(container)
    try:
        result = fn(*args, **kwargs)
    finally:
        _exit(container)
    if Py_TYPE(<PyObject*>result) == coroutine_type:
        return _run_inside(container, result)
    return result


cdef extern from "Python.h":
    ctypedef struct PyMethodDef:
        const char* ml_name
        void* ml_meth
        int ml_flags
        const char* ml_doc
    int METH_FASTCALL, METH_KEYWORDS
    object PyDescr_NewMethod(PyTypeObject* type, PyMethodDef* method)
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames)
    void PyType_Modified(PyTypeObject* type)
    ctypedef struct PyTypeObject_dict "PyTypeObject":
        PyObject* tp_dict


cdef object _run_vector(object self, PyObject** args, Py_ssize_t nargs, PyObject* kwnames):
    """Container.run as a METH_FASTCALL method: fn's arguments go on as they came (a switch
    is fixed cost that every c.run(f) pays: no tuple, no dict)."""
    if nargs < 1:
        raise TypeError("run() needs the function to call: c.run(fn, *args, **kwargs)")
    cdef Container container = <Container>self  # the method descriptor checked the type
    cdef PyThreadState* ts = pc_tstate()
    _enter_in(container, ts)
    try:
        result = PyObject_Vectorcall(<object>args[0], args + 1, <size_t>(nargs - 1), kwnames)
    finally:
        _exit_in(container, ts)
    if Py_TYPE(<PyObject*>result) == coroutine_type:
        return _run_inside(container, result)
    return result


cdef PyMethodDef _run_method
_run_method.ml_name = "run"
_run_method.ml_meth = <void*>_run_vector
_run_method.ml_flags = METH_FASTCALL | METH_KEYWORDS
_run_method.ml_doc = (
    "run($self, fn, /, *args, **kwargs)\n--\n\n"
    "Call fn(*args, **kwargs) inside this container and return its result (a coroutine\n"
    "comes back wrapped, so that its body runs inside the container too when awaited).")


cdef int _install_run() except -1:
    cdef PyTypeObject_dict* container_type = <PyTypeObject_dict*>Container
    (<dict>container_type.tp_dict)["run"] = PyDescr_NewMethod(<PyTypeObject*>Container,
                                                              &_run_method)
    PyType_Modified(<PyTypeObject*>Container)
    return 0


_install_run()


cdef Container _host = _new_host()
_HOST_FRAME = _Frame.__new__(_Frame)
_HOST_FRAME.container = _host
_next_id = 1
_check_var_cache()
#: The host container: current wherever no container was entered.
host = _host


def _release(Py_ssize_t slot, str name, Column column, ref):
    """Free a dead variable's slot: clear its value in every container, then reuse the slot.

    A weakref callback: it may run at any allocation, in any thread, within a declaration too.
    It touches its own slot (no one can claim it before the push at the end) and the name's
    entry only while that is still its own, so it needs no lock."""
    cdef PyObject* value
    if column is not None:
        drop_column(column)
    if _by_name.get(name) is ref:
        del _by_name[name]
    _record_refs[slot] = None
    dropped = []
    for c in _snapshot(False):
        value = area_take(&(<Container>c).area, slot)
        if value != NULL:
            dropped.append(<object>value)  # takes a reference ...
            Py_DECREF(<object>value)  # ... and this drops the area's
    heapq.heappush(_free_slots, slot)
    del dropped  # values die after the slot is clean everywhere


# Declarations are serialized: making a record runs Python code (a column's numpy storage,
# a GC pass), so two threads could declare the same name at once. Reentrant: a finalizer
# that declares a variable may run inside a declaration on the same thread.
cdef object _declare_lock = threading.RLock()


cdef _Record _declare(str name, str group, object default, bint has_default, object factory,
                      object on_exit, object spec):
    cdef _Record record
    with _declare_lock:
        record = _declared(name)
        if record is None:
            record = _new_record(name, group, spec)
            if record is None:  # a finalizer declared `name` meanwhile: this redeclares it
                return _declare(name, group, default, has_default, factory, on_exit, spec)
        elif record.group != group:
            raise ValueError(
                f"PerContainer {name!r} is already declared in group {record.group!r}; "
                f"a redeclaration must use the same group, not {group!r}")
        else:
            check_redeclaration(name, record.column.spec if record.column is not None else None,
                                spec)
            if spec is not None:
                record.column.set_spec(spec)  # the same layout; new containers take the new default
        # A redeclaration (importlib.reload) keeps the slot and values, and takes the new spec.
        record.default = default
        record.has_default = has_default
        record.factory = factory
        record.on_exit = on_exit
        return record


cdef _Record _declared(str name):
    """Return the live record of the variable declared as `name`, or None."""
    ref = _by_name.get(name)
    return ref() if ref is not None else None


cdef _Record _new_record(str name, str group, object spec):
    """Make and register the record of a new variable (under _declare_lock); return None if a
    finalizer declared `name` meanwhile (on this thread, while the record was made).

    The slot is claimed first, running no Python code between choosing and claiming it: making
    the record runs Python code, and a finalizer may declare another variable meanwhile."""
    cdef Py_ssize_t slot
    if _free_slots:
        slot = heapq.heappop(_free_slots)
    else:
        _record_refs.append(None)  # reserved until the record is registered
        slot = len(_record_refs) - 1
    cdef _Record record = None
    cdef Column column = None
    try:
        record = _Record.__new__(_Record)
        record.name = name
        record.group = group
        record.slot = slot
        record.seq = next(_declaration_seq)
        if spec is not None:
            column = record.column = add_column(spec, group)
        ref = weakref.ref(record, functools.partial(_release, slot, name, column))
    except BaseException:
        if column is not None:
            drop_column(column)
        heapq.heappush(_free_slots, slot)
        raise
    if _declared(name) is not None:
        record = None  # ours dies now, while `ref` lives: its callback frees the slot and column
        return None
    _record_refs[slot] = ref
    _by_name[name] = ref
    _groups.add(group)
    return record


@cython.final
cdef class _Pending:
    """A factory call in progress for one (container, slot): other flows wait for it.

    Built whole before it is published in _pending, so a racing reader never sees half of it.
    Its owner is the flow running the factory: the pendings in its _making context."""
    cdef str name
    cdef object thread
    cdef object greenlet
    cdef object done  # a threading.Event
    cdef object green  # a gevent Event, made by a waiter in another greenlet of the thread
    # What the owner waits for (from another flow's factory): the wait-for graph's edge.
    cdef _Pending blocked_on

    cdef int finish(self) except -1:
        """Wake every reader waiting for this factory."""
        self.done.set()
        if self.green is not None:
            self.green.set()
        return 0


cdef _Pending _new_pending(str name):
    cdef _Pending pending = _Pending.__new__(_Pending)
    pending.name = name
    pending.thread = threading.get_ident()
    pending.greenlet = current_greenlet()
    pending.done = threading.Event()
    return pending


cdef dict _pending = {}
# The factory calls this flow is making, outermost first: set around each factory call, so a
# greenlet, a thread or a copy of the context (asyncio.to_thread) that reads inside a factory
# knows it is that factory's flow: waiting for it would wait for itself.
cdef object _making = contextvars.ContextVar("percontainer.making", default=())
cdef object _MISSING = contextvars.Token.MISSING


cdef int _check_wait(_Pending pending, _Pending mine, tuple making) except -1:
    """Raise if waiting for `pending` would never end; else mark this flow's factories as
    blocked on it. Runs no Python code (no allocation either) unless it raises: the check and
    the mark are one step under the GIL, so of two flows closing a cycle, the second sees the
    first's mark."""
    cdef _Pending step = pending
    cdef Py_ssize_t i, steps = 0, bound = len(_pending) + 1  # each step is another pending
    while step is not None and steps < bound:
        for i in range(len(making)):
            if making[i] is step:  # the chain of waits comes back to this flow
                raise _cycle(pending, making, i)
        step = step.blocked_on
        steps += 1
    if pending.thread == mine.thread and (pending.greenlet is None
                                          or pending.greenlet is mine.greenlet):
        # The owner is this very flow, read through another context (contextvars.Context.run):
        # it is suspended below this call, waiting would wait for itself.
        raise cycle_error([pending.name, pending.name])
    for i in range(len(making)):
        (<_Pending>making[i]).blocked_on = pending
    return 0


cdef object _cycle(_Pending pending, tuple making, Py_ssize_t start):
    """Return the error for the chain of waits from pending back to making[start]."""
    cdef _Pending step = pending
    chain = []  # (the allocation may run Python code: the chain is re-read with care)
    while step is not None and len(chain) <= len(_pending):
        chain.append(step)
        if step is making[start]:
            break
        step = step.blocked_on
    names = [(<_Pending>made).name for made in making[start:]]
    names.extend([(<_Pending>made).name for made in chain])
    return cycle_error(names)


cdef int _wait(_Pending pending, _Pending mine) except -1:
    """Wait until pending's factory is done."""
    if pending.thread != mine.thread:
        pending.done.wait()
        return 0
    # Another greenlet of this thread owns it: a blocked thread would never run it.
    if pending.green is None:
        pending.green = green_event(pending.name)
    if not pending.done.is_set():
        pending.green.wait()
    return 0


def _forget_pending_in_child():
    """After fork(), in the child: only the forking thread survives (with its greenlets).
    Factories that other threads were running will never finish there, so their pending state
    goes (a read runs the factory again); this thread's own go on, with fresh events to wake
    on (another thread may have held an old one's lock at fork())."""
    global _declare_lock
    _declare_lock = threading.RLock()  # another thread may have held it at fork() too
    thread = threading.get_ident()
    for key, pending in list(_pending.items()):
        if (<_Pending>pending).thread == thread:
            (<_Pending>pending).done = threading.Event()
        else:
            del _pending[key]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pending_in_child)


cdef inline int _store_value(Container c, Py_ssize_t slot, object value) except -1:
    """Put value at slot in c's area, dropping the old value last."""
    if c.ident.state == DEAD:
        raise ContainerClosedError(f"cannot write in closed {c!r}")
    cdef PyObject** where = area_slot(&c.area, slot)
    cdef PyObject* old = where[0]
    Py_INCREF(value)
    where[0] = <PyObject*>value
    Py_XDECREF(old)  # last: the old value's __del__ may run anything
    return 0


# -- typed variables ----------------------------------------------------------------------------
# A typed variable's copy in a container is plain memory: cell(column, owner's row). Reads box
# it; writes convert and range-check first, in C for exact ints and floats, else through the
# spec (_typed.TypedSpec, which also words every error), and only then find the storage: the
# conversion may run Python code (an __index__), during which the container may close.

cdef extern from *:
    """
    static inline int pc_add_ll(long long a, long long b, long long *out) {
        return __builtin_add_overflow(a, b, out);
    }
    static inline int pc_add_ull(unsigned long long a, long long b, unsigned long long *out) {
        unsigned long long down;
        if (b >= 0) {
            return __builtin_add_overflow(a, (unsigned long long)b, out);
        }
        down = (unsigned long long)(-(b + 1)) + 1u;
        if (a < down) {
            return 1;
        }
        *out = a - down;
        return 0;
    }
    """
    bint pc_add_ll(long long a, long long b, long long* out) noexcept
    bint pc_add_ull(unsigned long long a, long long b, unsigned long long* out) noexcept

cdef extern from *:
    # Boxing a typed int for get() and add(): most callers use the int and drop it at once, so
    # one box of a one-digit int is kept, and while nothing but this module references it
    # (refcount 1: no one can observe the change, as with pc_add_in_place) it is rewritten in
    # place instead of allocating a new int. Where PC_INT_IN_PLACE is off (above), every value
    # gets an int of its own and add() always takes the general path.
    """
    #if defined(__GNUC__)
    #define PC_LIKELY(x) __builtin_expect(!!(x), 1)
    #else
    #define PC_LIKELY(x) (x)
    #endif
    #if PC_INT_IN_PLACE
    #define PC_BOXED(value) ((value) >= 257 && (value) < PyLong_BASE)  /* one digit, not cached */
    #else
    #define PC_BOXED(value) 0
    #endif
    static PyObject *pc_box = NULL;  /* never NULL once the module is imported */
    static int pc_box_init(void) {
        pc_box = PyLong_FromLongLong(1000);  /* above the small-int cache: an int of its own */
        return pc_box == NULL ? -1 : 0;
    }
    static inline PyObject *pc_box_ll(long long value) {
    #if PC_INT_IN_PLACE
        PyObject *box;
        if (PC_BOXED(value)) {
            box = pc_box;
            if (Py_REFCNT(box) == 1) {
                PC_DIGIT0(box) = (digit)value;
                Py_INCREF(box);
                return box;
            }
            box = PyLong_FromLongLong(value);  /* a one-digit int of its own */
            if (box != NULL) {
                Py_DECREF(pc_box);  /* held elsewhere too (refcount > 1): never freed here */
                Py_INCREF(box);
                pc_box = box;
            }
            return box;
        }
    #endif
        return PyLong_FromLongLong(value);
    }
    /* add()'s common case on a counter cell (which holds less than _typed.NARROW, so adding a
       digit cannot overflow): a positive one-digit delta, a sum the box can hold (below 2**30,
       so below NARROW too) and a box nobody else holds. Writes the sum to the cell and the box
       and returns the box, borrowed; else NULL, having written nothing and set no error: the
       caller takes the general path. */
    static inline PyObject *pc_counter_add(int64_t *at, PyObject *delta) {
    #if PC_INT_IN_PLACE
        if (PC_LIKELY(PyLong_CheckExact(delta) && PC_ONE_DIGIT(delta))) {
            long long sum = *at + (long long)PC_DIGIT0(delta);
            PyObject *box = pc_box;
            if (PC_LIKELY(PC_BOXED(sum) && Py_REFCNT(box) == 1)) {
                *at = sum;
                PC_DIGIT0(box) = (digit)sum;
                return box;
            }
        }
    #endif
        return NULL;
    }
    """
    int pc_box_init() except -1
    object pc_box_ll(long long value)
    PyObject* pc_counter_add(int64_t* at, PyObject* delta) noexcept

pc_box_init()

cdef inline Container _owner(PerContainer var, Container c):
    """Return the container storing var's group for c (the current one, where none is shared)."""
    return c if c.ident.direct else _storage(c, var.record.group)


cdef Container _open_owner(PerContainer var, str what):
    cdef Container owner = _owner(var, _current())
    if owner.ident.state == DEAD:
        raise ContainerClosedError(f"{var.record.name!r} {what} in closed {owner!r}")
    return owner


cdef Column _typed_column(PerContainer var, str what):
    if var.column is None:
        _check_bound(var)
        raise TypeError(f"{what}() is for typed variables; declare {var.record.name!r} "
                        "with dtype= to use it")
    return var.column


cdef int _check_bound(PerContainer var) except -1:
    """Raise TypeError if var's __init__ never ran: on the slow paths, before they read its
    record (the fast paths miss on NO_SLOT, or find no column)."""
    if var.record is None:
        raise TypeError(not_initialised("PerContainer"))
    return 0


cdef inline long long _load_int(char* at, int kind, int itemsize) noexcept:
    """Return an INT or UINT (below 8 bytes) copy."""
    if kind == KIND_INT:
        if itemsize == 8:
            return (<int64_t*>at)[0]
        if itemsize == 4:
            return (<int32_t*>at)[0]
        if itemsize == 2:
            return (<int16_t*>at)[0]
        return (<int8_t*>at)[0]
    if itemsize == 4:
        return (<uint32_t*>at)[0]
    if itemsize == 2:
        return (<uint16_t*>at)[0]
    return (<uint8_t*>at)[0]


cdef inline void _store_int(char* at, int itemsize, long long value) noexcept:
    """Store an in-range INT or UINT (below 8 bytes) value."""
    if itemsize == 8:
        (<int64_t*>at)[0] = value
    elif itemsize == 4:
        (<uint32_t*>at)[0] = <uint32_t>value
    elif itemsize == 2:
        (<uint16_t*>at)[0] = <uint16_t>value
    else:
        (<uint8_t*>at)[0] = <uint8_t>value


cdef inline object _read(Column column, char* at):
    """Return a scalar copy as a Python int/float/bool."""
    if column.kind == KIND_INT and column.itemsize == 8:  # the common counter, first
        return pc_box_ll((<int64_t*>at)[0])
    if column.kind == KIND_FLOAT:
        return PyFloat_FromDouble((<double*>at)[0] if column.itemsize == 8 else (<float*>at)[0])
    if column.kind == KIND_BOOL:
        return at[0] != 0
    if column.kind == KIND_UINT and column.itemsize == 8:
        return PyLong_FromUnsignedLongLong((<uint64_t*>at)[0])
    return pc_box_ll(_load_int(at, column.kind, column.itemsize))


cdef int _write(Column column, Container owner, object value) except -1:
    """Store a value the spec converted (an exact int, float or bool, in range) in owner's
    row. It is made a C number first and only then is the cell's address taken and written,
    with no Python code between (a conversion of anything but an exact number could run an
    __index__ that grows the storage and moves the cell)."""
    cdef double real = 0
    cdef long long number = 0
    cdef unsigned long long unsigned_number = 0
    if column.kind == KIND_FLOAT:
        if not PyFloat_CheckExact(value):
            raise TypeError(f"internal: a converted float, not {type(value).__name__}")
        real = PyFloat_AS_DOUBLE(value)
    elif column.kind == KIND_BOOL:
        if value is not True and value is not False:
            raise TypeError(f"internal: a converted bool, not {type(value).__name__}")
    elif not PyLong_CheckExact(value):
        raise TypeError(f"internal: a converted int, not {type(value).__name__}")
    elif column.kind == KIND_UINT and column.itemsize == 8:
        unsigned_number = PyLong_AsUnsignedLongLong(value)  # an exact int: no Python code
    else:
        number = PyLong_AsLongLong(value)
    column.note(value)  # an exact number compared: no Python code, but before `at` anyway
    cdef char* at = cell(column, owner.row)
    if column.kind == KIND_FLOAT:
        if column.itemsize == 8:
            (<double*>at)[0] = real
        else:
            (<float*>at)[0] = <float>real
    elif column.kind == KIND_BOOL:
        at[0] = value is True
    elif column.kind == KIND_UINT and column.itemsize == 8:
        (<uint64_t*>at)[0] = unsigned_number
    else:
        _store_int(at, column.itemsize, number)
    return 0


cdef object _typed_get(PerContainer var, Container owner):
    if owner.ident.state == DEAD:
        raise ContainerClosedError(f"{var.record.name!r} read in closed {owner!r}")
    cdef Column column = var.column
    if column.kind != KIND_VIEW:
        return _read(column, cell(column, owner.row))
    return _typed_view(var, owner)


cdef object _typed_view(PerContainer var, Container owner):
    """Return owner's view of an array or record variable, made once and kept in its area."""
    cdef PyObject* held = area_get(&owner.area, var.slot)
    if held != NULL:
        return <object>held
    view = make_row_view(var.column, owner.row)
    if owner.ident.state == DEAD:  # torn down while the view was made: it goes with the error
        raise ContainerClosedError(f"{var.record.name!r} read in closed {owner!r}")
    held = area_get(&owner.area, var.slot)
    if held != NULL:  # another thread made one meanwhile
        return <object>held
    _store_value(owner, var.slot, view)
    return view


cdef int _typed_set(PerContainer var, object value) except -1:
    cdef Column column = var.column
    cdef long long number
    cdef int overflow = 0
    cdef Container owner
    if column.kind == KIND_VIEW:
        raw = column.spec.convert_array(value).tobytes()
        owner = _open_owner(var, "set")
        memcpy(cell(column, owner.row), <char*>raw, column.row_bytes)
        return 0
    if column.kind == KIND_FLOAT and column.itemsize == 8 and PyFloat_CheckExact(value):
        owner = _open_owner(var, "set")
        (<double*>cell(column, owner.row))[0] = PyFloat_AS_DOUBLE(value)
        return 0
    if (column.kind == KIND_INT or column.kind == KIND_UINT and column.itemsize < 8) \
            and PyLong_CheckExact(value):
        number = PyLong_AsLongLongAndOverflow(value, &overflow)
        if not overflow and column.low <= number <= column.high:
            owner = _open_owner(var, "set")
            _store_int(cell(column, owner.row), column.itemsize, number)
            return 0
    value = column.spec.convert(value)  # raises TypeError or OverflowError, storing nothing
    owner = _open_owner(var, "set")
    _write(column, owner, value)
    return 0


cdef object _typed_add(PerContainer var, object delta):
    cdef Column column = var.column
    cdef int kind = column.kind
    if kind == KIND_VIEW:
        return _view_add(var, delta)
    if kind == KIND_BOOL:
        return column.spec.add(False, delta)  # raises TypeError: bools take set()
    if kind == KIND_FLOAT:
        return _float_add(var, delta)
    cdef long long step, now, new
    cdef unsigned long long unsigned_new
    cdef int overflow = 0
    cdef char* at
    if not PyLong_CheckExact(delta):
        delta = column.spec.convert_delta(delta)
    step = PyLong_AsLongLongAndOverflow(delta, &overflow)
    if not overflow:
        at = cell(column, _open_owner(var, "add").row)
        if kind == KIND_UINT and column.itemsize == 8:
            if not pc_add_ull((<uint64_t*>at)[0], step, &unsigned_new) and (
                    column.high < 0 or unsigned_new <= <unsigned long long>column.high):
                (<uint64_t*>at)[0] = unsigned_new
                return PyLong_FromUnsignedLongLong(unsigned_new)
        else:
            now = _load_int(at, kind, column.itemsize)
            if not pc_add_ll(now, step, &new) and column.low <= new <= column.high:
                _store_int(at, column.itemsize, new)
                return pc_box_ll(new)
    # Out of range (the spec raises, storing nothing), or a delta beyond 64 bits that may
    # still land in range (a uint64 brought down): Python ints. spec.add runs Python code, so
    # the result is written only if the copy is still the one read (else again): an add()
    # from another thread meanwhile is not lost.
    cdef Container owner
    while True:
        before = _read(column, cell(column, _open_owner(var, "add").row))
        result = column.spec.add(before, delta)
        owner = _open_owner(var, "add")
        if _read(column, cell(column, owner.row)) == before:  # exact numbers: no Python
            _write(column, owner, result)  # code from the read to the write
            return result


cdef object _float_add(PerContainer var, object delta):
    cdef Column column = var.column
    if not (PyFloat_CheckExact(delta) or PyLong_CheckExact(delta)):
        delta = column.spec.convert_delta(delta)
    cdef double step = PyFloat_AsDouble(delta)  # an int too large raises, storing nothing
    cdef char* at = cell(column, _open_owner(var, "add").row)
    cdef double new
    if column.itemsize == 8:
        new = (<double*>at)[0] + step
        (<double*>at)[0] = new
        return PyFloat_FromDouble(new)
    new = (<float*>at)[0] + step
    if isfinite(new) and not isfinite(<float>new):
        column.spec.convert(new)  # raises OverflowError: beyond float32
    (<float*>at)[0] = <float>new
    return PyFloat_FromDouble((<float*>at)[0])


cdef object _view_add(PerContainer var, object delta):
    """Add to an array variable's copy: read its bytes, add in numpy, and write the sum back
    only if the copy is still the one read (else again), by a memcpy that runs no Python code:
    no concurrent set() or add() is lost, and a snapshot never sees half a write (numpy can
    release the GIL while it writes a large array)."""
    cdef Column column = var.column
    cdef Container owner
    cdef char* at
    spec = column.spec
    if spec.dtype.names is not None or spec.dtype.kind == "b":
        spec.add_array(None, delta)  # raises TypeError: records and bools take set()
    step = spec.convert_array(delta)
    while True:
        owner = _open_owner(var, "add")
        before = PyBytes_FromStringAndSize(cell(column, owner.row), column.row_bytes)
        after = spec.add_array(spec.from_bytes(before), step).tobytes()
        owner = _open_owner(var, "add")
        at = cell(column, owner.row)
        if memcmp(at, <char*>before, column.row_bytes) == 0:
            memcpy(at, <char*>after, column.row_bytes)
            return _typed_view(var, owner)


cdef object _object_add(PerContainer var, Container current, object delta):
    """add() of an object variable, past the in-place case. The + may run Python code (an
    __add__, or a thread switch meanwhile) that drops the stored value or tears the container
    down: the value and its container are held until the sum is stored."""
    _check_bound(var)
    cdef Container owner = _storage(current, var.record.group)
    cdef PyObject* held = area_get(&owner.area, var.slot)
    value = <object>held if held != NULL else var._miss(owner)
    new = value + delta  # atomic with the read for built-in numbers: their + runs no Python code
    _store_value(owner, var.slot, new)  # raises if owner was torn down meanwhile
    return new


@cython.final
cdef class PerContainer:
    """A module-level variable with one value per container, read through the current one."""
    cdef _Record record  # None until __init__ binds it (never, if made by __new__ alone)
    cdef Py_ssize_t slot  # a copy of record.slot, for the hot paths; NO_SLOT until bound
    cdef Column column  # a copy of record.column: a typed variable's storage, else None
    cdef object __weakref__

    def __cinit__(self):
        self.slot = NO_SLOT  # until bound: reads miss, writes raise, as _check_bound does

    # What inspect.signature() shows (a docstring's text signature, as Container has, cannot
    # hold the <unset> default): the twin's, without its annotations.
    __signature__ = inspect.Signature([
        inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        *[inspect.Parameter(keyword, inspect.Parameter.KEYWORD_ONLY, default=value)
          for keyword, value in (("default", _UNSET), ("factory", None), ("group", "default"),
                                 ("on_exit", None), ("dtype", None), ("shape", ()))],
    ])

    def __init__(self, name, *args, default=_UNSET, factory=None, group="default", on_exit=None,
                 dtype=None, shape=()):
        if args:  # Cython's own message would not say what to write instead
            raise TypeError(f"PerContainer() takes 1 positional argument (the name) but "
                            f"{len(args) + 1} were given: default and the rest are keyword-only, "
                            f"as in PerContainer({name!r}, default={args[0]!r})")
        if self.record is not None:  # rebinding would move the slot under running code
            raise TypeError("PerContainer.__init__ may be called once only; "
                            "declare another variable with PerContainer(name, ...)")
        cdef bint has_default = default is not _UNSET
        cdef bint typed = dtype is not None  # a typed default is copied into each container
        check_declaration(name, None if typed else default, has_default and not typed, factory,
                          group, on_exit)
        spec = spec_for(name, dtype, shape, default, has_default, factory, on_exit)
        _bind(self, _declare(name, group, default, has_default, factory, on_exit, spec))

    @classmethod
    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)

    @property
    def name(self):
        """The variable's name (its identity: declaring it again binds to the same slot)."""
        _check_bound(self)
        return self.record.name

    @property
    def group(self):
        """The group that Container(share=...) names to share this variable with a parent."""
        _check_bound(self)
        return self.record.group

    @property
    def dtype(self):
        """A typed variable's numpy dtype; None for an object variable."""
        _check_bound(self)
        return None if self.column is None else self.column.spec.dtype

    @property
    def shape(self):
        """A typed variable's shape (() for a scalar, and for an object variable)."""
        _check_bound(self)
        return () if self.column is None else self.column.spec.shape

    def __repr__(self):
        if self.record is None:
            return "<PerContainer not initialised>"
        typed = "" if self.column is None else f" dtype={self.column.spec.describe()}"
        return f"<PerContainer {self.record.name!r} group={self.record.group!r}{typed}>"

    # -- copying and pickling: a variable is an identity, like a module-level function -------
    def __copy__(self):
        _check_bound(self)
        return self

    def __deepcopy__(self, memo):
        _check_bound(self)
        return self

    def __reduce__(self):
        """Pickle by name: loading returns the variable declared under that name."""
        _check_bound(self)
        return _variable_named, (self.record.name,)

    # -- reading ----------------------------------------------------------------------------
    def get(self):
        """Return the current container's value (running the factory once if needed)."""
        cdef PyObject* c = _current_ptr()
        cdef PyObject* value
        if self.column is not None:  # (attribute chains on self.column take no reference)
            if self.column.counter and (<Container>c).ident.direct:
                return pc_box_ll((<int64_t*>self.column.flat)[(<Container>c).row])
            return _typed_get(self, _owner(self, <Container>c))
        if (<Container>c).ident.direct:
            value = area_get(&(<Container>c).area, self.slot)
            if value != NULL:
                return <object>value
        return self.of(<Container>c)

    def of(self, container):
        """Return the value in `container` without entering it."""
        _check_bound(self)  # also get()'s slow path
        if not isinstance(container, Container):
            raise TypeError(f"of() takes a Container, not {type(container).__name__}")
        cdef Container c = _storage(<Container>container, self.record.group)
        if self.column is not None:
            return _typed_get(self, c)
        cdef PyObject* value = area_get(&c.area, self.slot)
        if value != NULL:
            return <object>value
        return self._miss(c)

    cdef object _miss(self, Container owner):
        cdef _Record record = self.record
        if owner.ident.state == DEAD:
            raise ContainerClosedError(f"{record.name!r} read in closed {owner!r}")
        if record.factory is not None:
            return self._run_factory(owner)
        if record.has_default:
            return record.default
        raise LookupError(
            f"PerContainer {record.name!r} is not set in {owner!r} and has no default; "
            "set() it first, or declare it with default= or factory=")

    cdef object _run_factory(self, Container owner):
        """Run the factory once for (owner, slot); other flows that race wait and share its
        result, and a flow that would wait for itself (factories reading each other, across
        threads too) gets a ContainerError naming the variables."""
        cdef _Record record = self.record
        cdef PyObject* held
        cdef _Pending pending
        # Built whole before the check: making it runs Python code.
        cdef _Pending mine = _new_pending(record.name)
        cdef tuple making = _making.get()
        key = (owner, self.slot)
        while True:
            # Atomic under the GIL: no Python code runs from the check to the insertion (the
            # key's hash and compare are C), nor to the check of the wait and its mark.
            if owner.ident.state == DEAD:
                raise ContainerClosedError(f"{record.name!r} read in closed {owner!r}")
            held = area_get(&owner.area, self.slot)
            if held != NULL:
                return <object>held
            pending = <_Pending>_pending.setdefault(key, mine)
            if pending is mine:
                break
            _check_wait(pending, mine, making)
            try:
                _wait(pending, mine)
            finally:
                for made in making:
                    (<_Pending>made).blocked_on = None
        installed = _UNSET
        making_now = making + (mine,)
        token = _making.set(making_now)
        try:
            value = _call_inside(owner, record.factory, ())
            if owner.ident.state != DEAD:
                held = area_get(&owner.area, self.slot)
                if held != NULL:
                    installed = <object>held  # a set() meanwhile wins
                else:
                    _store_value(owner, self.slot, value)
                    installed = value
        finally:
            try:
                if _pending.get(key) is mine:  # (not after a fork() that dropped it)
                    del _pending[key]
                mine.finish()
            finally:
                _making_reset(token, making_now)
        if installed is not value:  # the value never joined the container: hand it back
            if record.on_exit is not None:
                record.on_exit(value)
        if installed is _UNSET:
            raise ContainerClosedError(f"{owner!r} was closed while {record.name!r} was made")
        return installed

    # -- writing ----------------------------------------------------------------------------
    def set(self, value):
        """Set the current container's value."""
        if self.column is not None:
            _typed_set(self, value)
            return
        cdef PyObject* c = _current_ptr()
        if (<Container>c).ident.direct:
            _store_value(<Container>c, self.slot, value)
        else:
            _check_bound(self)
            _store_value(_open_owner(self, "set"), self.slot, value)

    @property
    def value(self):
        """The current container's value (get() / set())."""
        return self.get()

    @value.setter
    def value(self, value):
        self.set(value)

    def add(self, delta=1):
        """Add delta to the current container's value and return the new value."""
        cdef PyObject* owner
        cdef PyObject* boxed
        if self.column is not None:
            # The common counter inline: int64, in a live owner that shares nothing.
            owner = _current_ptr()
            if self.column.counter and (<Container>owner).ident.direct:
                boxed = pc_counter_add(
                    <int64_t*>self.column.flat + (<Container>owner).row, <PyObject*>delta)
                if boxed != NULL:
                    return <object>boxed
            return _typed_add(self, delta)
        cdef PyObject* current = _current_ptr()
        cdef PyObject* held
        if (<Container>current).ident.direct:
            held = area_get(&(<Container>current).area, self.slot)
            if held != NULL and pc_add_in_place(held, delta):
                return <object>held
        return _object_add(self, <Container>current, delta)

    def reset(self):
        """Make the variable unset again in the current container (a typed one: its default)."""
        cdef char* at
        if self.column is not None:
            at = cell(self.column, _open_owner(self, "reset").row)
            if self.column.fill is None:
                memset(at, 0, self.column.row_bytes)
            else:
                memcpy(at, <char*>self.column.fill, self.column.row_bytes)
            return
        _check_bound(self)
        cdef Container c = _storage(_current(), self.record.group)
        if c.ident.state == DEAD:
            raise ContainerClosedError(f"{self.record.name!r} reset in closed {c!r}")
        Py_XDECREF(area_take(&c.area, self.slot))

    # -- across containers ------------------------------------------------------------------
    def items(self):
        """Return (container, value) for each live container whose own storage holds a value."""
        cdef PyObject* value
        _check_bound(self)
        pairs = []
        if self.column is not None:
            group = self.record.group
            for c in _snapshot(True):
                if _storage(<Container>c, group) is c:
                    try:
                        pairs.append((c, _typed_get(self, <Container>c)))
                    except ContainerClosedError:  # closed since the listing, as below
                        pass
            return pairs
        for c in _snapshot(True):
            value = area_get(&(<Container>c).area, self.slot)
            if value != NULL:
                held = <object>value  # a reference first: making the pair may run a GC pass
                pairs.append((c, held))
        return pairs

    def sum(self):
        """Return the total of the values over all live containers (0 if none is set)."""
        cdef PyObject* value
        _check_bound(self)
        if self.column is not None:
            if self.column.counter:  # the common int64 counter: summed in C, no copy
                result = counter_sum(self.column)
                if result is not None:
                    return result
            return total(snapshot(self.column, self.record.group, DATA_ONLY))
        result = 0
        for c in _snapshot(True):
            value = area_get(&(<Container>c).area, self.slot)
            if value != NULL:
                held = <object>value  # a reference: its __radd__ may drop it from the area
                result = result + held
        return result

    def values(self):
        """Return a typed variable's values, one row per live container storing it."""
        return values(snapshot(_typed_column(self, "values"), self.record.group, WITH_IDENT))

    def min(self):
        """Return the least value over the live containers storing the typed variable."""
        return minimum(snapshot(_typed_column(self, "min"), self.record.group, WITH_LIVE))

    def max(self):
        """Return the greatest value over the live containers storing the typed variable."""
        return maximum(snapshot(_typed_column(self, "max"), self.record.group, WITH_LIVE))

    def mean(self):
        """Return the mean over the live containers storing the typed variable (a float)."""
        return mean(snapshot(_typed_column(self, "mean"), self.record.group, WITH_LIVE))


cdef int _bind(PerContainer var, _Record record) except -1:
    var.record = record
    var.slot = record.slot
    var.column = record.column
    record.variable = weakref.ref(var)
    return 0


def _variable_named(str name):
    """Return the variable declared as `name` in this process: what a pickled one loads as."""
    cdef _Record record = _declared(name)
    if record is None:
        raise TypeError(f"cannot load PerContainer {name!r}: {name!r} is not declared in this "
                        "process; import the module that declares it before unpickling")
    var = record.variable() if record.variable is not None else None
    if var is None:  # the last one bound died, an older one lives on: bind another
        var = PerContainer.__new__(PerContainer)
        _bind(<PerContainer>var, record)
    return var


def per_container(fn=None, /, *, name=None, group="default", on_exit=None, dtype=None,
                  shape=()):
    """Declare a per-container variable whose value the decorated function makes (with dtype=,
    a typed variable whose default the function returns, called once, now)."""

    def declare(factory):
        var_name = decorated_name(factory, name)
        if dtype is not None:
            return PerContainer(var_name, default=factory(), group=group, on_exit=on_exit,
                                dtype=dtype, shape=shape)
        return PerContainer(var_name, factory=factory, group=group, on_exit=on_exit, shape=shape)

    return declare if fn is None else declare(fn)


def wrap(fn):
    """Return a callable that runs fn in the container current now (for threads and callbacks)."""
    if fn is None or not callable(fn):
        raise TypeError(f"wrap() takes a callable, not {type(fn).__name__}")
    container = _current()

    @functools.wraps(fn)
    @cython.binding(True)  # a function object that functools.wraps can name
    def in_container(*args, **kwargs):
        return container.run(fn, *args, **kwargs)

    return in_container

