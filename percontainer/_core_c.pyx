# cython: language_level=3, embedsignature=True
# cython: binding=False, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""The compiled core: the same names and semantics as _core_py.py, which is the reference.

Storage (the kernel's per-cpu area): every container owns an *area*, a table of chunks of
CHUNK_SIZE PyObject* slots allocated with PyMem (so tracemalloc sees them). A variable owns a
fixed *slot*, the same in every container; reading it is current -> chunk[slot >> SHIFT] ->
[slot & MASK]. Chunks are allocated on first write and never move until the container dies,
so memory grows with the chunks a container touches, not with the variables declared. The
table itself may be reallocated: no pointer into it is kept across a call that can run Python.
"""

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint64_t
from libc.string cimport memset

import functools
import heapq
import itertools
import threading
import weakref
from types import GenericAlias

from ._checks import check_callable, check_declaration, check_share, decorated_name
from ._config import DISABLED
from ._errors import ContainerClosedError, ContainerError, report_unraisable

cdef extern from "Python.h":
    # Only the fields read here; the struct is CPython's (cpython/pystate.h, 3.7 to 3.13).
    ctypedef struct PyThreadState:
        uint64_t id
        uint64_t context_ver
    PyThreadState* PyThreadState_Get()
    object PyContextVar_New(const char* name, PyObject* default_value)
    int PyContextVar_Get(object var, PyObject* default_value, PyObject** value) except -1
    object PyContextVar_Set(object var, object value)
    int PyContextVar_Reset(object var, object token)  # -1 with an error set: see _exit_failed
    bint PyErr_ExceptionMatches(object exc)
    void PyErr_Clear()

__all__ = [
    "ENABLED", "Container", "ContainerClosedError", "ContainerError", "PerContainer",
    "containers", "current", "host", "per_container", "wrap",
]

#: False when PERCONTAINER_DISABLE was set at import: every container uses the host's storage.
ENABLED = not DISABLED
cdef bint enabled = ENABLED

cdef enum:
    CHUNK_SHIFT = 4
    CHUNK_SIZE = 16  # 1 << CHUNK_SHIFT slots: 128 bytes, two cache lines
    CHUNK_MASK = 15

# Life cycle, as in the twin. DEAD is 0 so that a Container made by __new__ alone is unusable.
cdef enum:
    DEAD = 0
    LIVE = 1
    CLOSING = 2
    TEARDOWN = 3


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
    cdef object __weakref__


# The variable registry (cold paths only; every operation on it is atomic under the GIL since
# its keys are str and int). A record lives while a PerContainer refers to it.
cdef list _record_refs = []  # slot -> weakref to its _Record, or None
cdef list _free_slots = []  # heap: reuse the lowest slot first, keeping areas short
cdef dict _by_name = {}
cdef set _groups = {"default"}
cdef object _declaration_seq = itertools.count()

# Containers that still hold storage (LIVE, CLOSING, TEARDOWN), in creation order.
cdef dict _holding = {}
cdef uint64_t _next_id = 0


@cython.final
@cython.freelist(32)
cdef class _Frame:
    """What the current-container ContextVar holds: one entered container and the frame below."""
    cdef Container container
    cdef _Frame below
    cdef object token


cdef object _current_frame = PyContextVar_New("percontainer.current", NULL)

# The current-container cache, checked before the ContextVar on every read.
# CPython bumps the thread state's context_ver whenever the thread switches contexts
# (Context.run, so every asyncio task step), and thread-state ids are never reused. A
# ContextVar set or reset does not bump it; but the ContextVar below is private to this
# module, and every set and reset of it (__enter__, __exit__, _call_inside) refreshes the
# cache itself. So while (ts.id, context_ver) match, the current frame is the cached one,
# and the context keeps it (and its container) alive for the borrowed pointers below.
# This is the scheme PyContextVar_Get uses for its own cache, minus its reference counting
# and call. A C __thread variable would be as fast but wrong under asyncio (tasks share a
# thread); PyContextVar_Get on every read costs a call and a refcount pair more
# (bench/ratios.py puts a read through this cache at the cost of ContextVar.get()).
# The GIL serializes every access to these four.
cdef uint64_t cached_ts_id = 0
cdef uint64_t cached_ver = 0
cdef PyObject* cached_frame = NULL  # borrowed: the current frame, NULL when none is entered
cdef PyObject* cached_current = NULL  # borrowed: the current container


cdef inline void _cache(PyThreadState* ts, _Frame frame) noexcept:
    global cached_ts_id, cached_ver, cached_frame, cached_current
    cached_ts_id = ts.id
    cached_ver = ts.context_ver
    if frame is None:
        cached_frame = NULL
        cached_current = <PyObject*>_host
    else:
        cached_frame = <PyObject*>frame
        cached_current = <PyObject*>frame.container


cdef _Frame _current_frame_slow(PyThreadState* ts):
    cdef PyObject* value = NULL
    PyContextVar_Get(_current_frame, NULL, &value)
    cdef _Frame frame = None
    if value != NULL:
        frame = <_Frame>value
        Py_DECREF(<object>value)
    _cache(ts, frame)
    return frame


cdef inline _Frame _get_frame():
    cdef PyThreadState* ts = PyThreadState_Get()
    if ts.id == cached_ts_id and ts.context_ver == cached_ver:
        if cached_frame == NULL:
            return None
        return <_Frame>cached_frame
    return _current_frame_slow(ts)


cdef inline PyObject* _current_ptr() except NULL:
    """Return the current container, borrowed: the hot path of every read and write."""
    cdef PyThreadState* ts = PyThreadState_Get()
    if ts.id == cached_ts_id and ts.context_ver == cached_ver:
        return cached_current
    _current_frame_slow(ts)
    return cached_current


cdef inline Container _current():
    return <Container>_current_ptr()


def current():
    """Return the container current in this thread or asyncio task (the host if none)."""
    return _current()


def containers():
    """Return the live (not closed) containers, the host first, in creation order."""
    return [c for c in list(_holding) if (<Container>c).state == LIVE]


cdef object _call_inside(Container container, object fn, tuple args):
    """Call fn inside container without the closed check (for hooks and factories)."""
    if not enabled:
        return fn(*args)
    cdef _Frame frame = _Frame.__new__(_Frame)
    frame.container = container
    frame.below = _get_frame()
    token = PyContextVar_Set(_current_frame, frame)
    _cache(PyThreadState_Get(), frame)
    try:
        return fn(*args)
    finally:
        if PyContextVar_Reset(_current_frame, token) < 0:
            _exit_failed(container)
        _cache(PyThreadState_Get(), frame.below)


cdef int _exit_failed(Container container) except -1:
    """Turn a failed reset of the current frame into a ContainerError; no Python try block
    on the hot path."""
    if PyErr_ExceptionMatches(ValueError):  # the token belongs to another context
        PyErr_Clear()
        raise ContainerError(
            f"{container!r} was entered in another thread or task than the one exiting it")
    return -1  # any other error propagates as it is


@cython.final
cdef class Container:
    """A tenant: its own copy of every per-container variable."""
    cdef PyObject*** chunks  # the area: a table of nchunks chunk pointers (NULL = untouched)
    cdef Py_ssize_t nchunks
    cdef uint64_t _id
    cdef int state
    cdef Py_ssize_t users  # threads and tasks inside, by `with`; teardown waits for 0
    cdef object _name
    cdef Container _parent
    cdef frozenset _shared
    cdef dict owners  # shared group -> the container that stores it; None if none shared
    cdef dict children  # live child -> None, made on the first child
    cdef object __weakref__

    def __init__(self, name=None, *, parent=None, share=()):
        global _next_id
        if self.state != DEAD or self._shared is not None:
            raise TypeError("Container.__init__ may be called once only")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Container name must be a str or None, not {type(name).__name__}")
        if parent is None:
            parent = _current()
        elif not isinstance(parent, Container):
            raise TypeError(f"parent must be a Container, not {type(parent).__name__}")
        cdef Container up = <Container>parent
        shared = check_share(share, _groups) if share != () else frozenset()
        cdef dict owners = None
        if shared and enabled:
            # Flatten the sharing chain once: a shared group's owner is the parent's owner.
            owners = {group: (up.owners.get(group, up) if up.owners is not None else up)
                      for group in shared}
        # From here to the end no Python code runs: the checks above cannot leave half a container.
        if up.state != LIVE:
            raise ContainerClosedError(f"cannot create a child of closed {up!r}")
        self._id = _next_id
        _next_id += 1
        self._name = name
        self._parent = up
        self._shared = shared
        self.owners = owners
        if up is not _host:  # the host is never closed, so it needs no list of children
            if up.children is None:
                up.children = {}
            up.children[self] = None
        _holding[self] = None
        self.state = LIVE

    def __dealloc__(self):
        _free_area(self.chunks, self.nchunks)

    # -- attributes -------------------------------------------------------------------------
    @property
    def id(self):
        """The container's unique id; never reused in the process. The host's is 0."""
        return self._id

    @property
    def name(self):
        """The name given at creation."""
        return self._name

    @property
    def parent(self):
        """The container this one was created from; None for the host."""
        return self._parent

    @property
    def shared(self):
        """The variable groups this container shares with its parent."""
        return self._shared

    @property
    def closed(self):
        """True once close() was called."""
        return self.state != LIVE

    def __repr__(self):
        closed = " closed" if self.state != LIVE else ""
        return f"<Container id={self._id} name={self._name!r}{closed}>"

    # -- entering ---------------------------------------------------------------------------
    def __enter__(self):
        if self.state != LIVE:
            raise ContainerClosedError(f"cannot enter closed {self!r}")
        if not enabled:
            return self
        cdef _Frame frame = _Frame.__new__(_Frame)
        frame.container = self
        frame.below = _get_frame()
        frame.token = PyContextVar_Set(_current_frame, frame)
        self.users += 1
        _cache(PyThreadState_Get(), frame)
        return self

    def __exit__(self, exc_type, exc, tb):
        if not enabled:
            return None
        cdef _Frame frame = _get_frame()
        if frame is None or frame.container is not self:
            raise ContainerError(
                f"exiting {self!r} while {_current()!r} is current: with-blocks must nest")
        if PyContextVar_Reset(_current_frame, frame.token) < 0:
            _exit_failed(self)
        _cache(PyThreadState_Get(), frame.below)
        self.users -= 1
        if self.users == 0 and self.state == CLOSING:
            self.state = TEARDOWN
            self._teardown(False)
        return None

    def run(self, fn, /, *args, **kwargs):
        """Call fn(*args, **kwargs) inside this container and return its result."""
        with self:
            return fn(*args, **kwargs)

    # -- closing ----------------------------------------------------------------------------
    def close(self):
        """Close this container and its live descendants, run exit hooks, drop the values."""
        if self is _host:
            raise ContainerError("the host container cannot be closed")
        if self.state != LIVE:
            return
        self.state = CLOSING  # from here on, nothing can enter it or create children in it
        errors = []
        for child in list(self.children or ()):
            try:
                child.close()
            except Exception as error:  # the parent closes whatever a child raised
                errors.append(error)
        if self._parent is not None and self._parent.children is not None:
            self._parent.children.pop(self, None)
        if self.users == 0:
            self.state = TEARDOWN
            errors.extend(self._teardown(True))
        if errors:
            raise errors[0]

    cdef list _teardown(self, bint raise_errors):
        """Run the exit hooks in reverse declaration order, then drop every value."""
        cdef Py_ssize_t hi, lo, nrefs
        cdef PyObject** chunk
        cdef PyObject* value
        cdef _Record record
        hooks = []
        for hi in range(self.nchunks):
            chunk = self.chunks[hi]  # chunks never move while the container holds storage
            if chunk == NULL:
                continue
            for lo in range(CHUNK_SIZE):
                value = chunk[lo]
                nrefs = len(_record_refs)
                if value == NULL or hi * CHUNK_SIZE + lo >= nrefs:
                    continue
                ref = _record_refs[hi * CHUNK_SIZE + lo]
                record = ref() if ref is not None else None
                if record is not None and record.on_exit is not None:
                    hooks.append((record.seq, record.on_exit, <object>value))
        hooks.sort(key=_hook_order, reverse=True)
        errors = []
        hook_value = None
        for _, on_exit, hook_value in hooks:
            try:
                _call_inside(self, on_exit, (hook_value,))
            except Exception as error:  # every hook runs, whatever one raised
                if raise_errors:
                    errors.append(error)
                else:
                    report_unraisable(f"Exception in exit hook of {self!r}", error, on_exit)
        hooks = hook_value = None  # the hooks' values die with the rest, below
        # Unlink first, free last: detach the area so that code run by a dying value sees a
        # dead container, never a half-freed area.
        cdef PyObject*** chunks = self.chunks
        cdef Py_ssize_t nchunks = self.nchunks
        self.chunks = NULL
        self.nchunks = 0
        self.state = DEAD
        _holding.pop(self, None)
        _free_area(chunks, nchunks)
        return errors

    cdef PyObject** _slot_for_write(self, Py_ssize_t hi, Py_ssize_t lo) except NULL:
        """Return the address of slot (hi, lo), growing the table or adding a chunk."""
        cdef PyObject*** table
        cdef PyObject** chunk
        cdef Py_ssize_t nchunks = self.nchunks
        if self.state == DEAD:
            raise ContainerClosedError(f"cannot write in closed {self!r}")
        if hi >= nchunks:
            table = <PyObject***>PyMem_Realloc(self.chunks, (hi + 1) * sizeof(PyObject**))
            if table == NULL:
                raise MemoryError()
            memset(&table[nchunks], 0, (hi + 1 - nchunks) * sizeof(PyObject**))
            self.chunks = table
            self.nchunks = hi + 1
        chunk = self.chunks[hi]
        if chunk == NULL:
            chunk = <PyObject**>PyMem_Calloc(CHUNK_SIZE, sizeof(PyObject*))
            if chunk == NULL:
                raise MemoryError()
            self.chunks[hi] = chunk
        return &chunk[lo]


cdef object _hook_order(tuple hook):
    return hook[0]


cdef void _free_area(PyObject*** chunks, Py_ssize_t nchunks):
    """Drop every value of a detached area and free its memory."""
    cdef Py_ssize_t hi, lo
    cdef PyObject** chunk
    cdef PyObject* value
    for hi in range(nchunks):
        chunk = chunks[hi]
        if chunk == NULL:
            continue
        for lo in range(CHUNK_SIZE):
            value = chunk[lo]
            chunk[lo] = NULL
            Py_XDECREF(value)
        PyMem_Free(chunk)
    PyMem_Free(chunks)


cdef inline PyObject* _peek(Container c, Py_ssize_t hi, Py_ssize_t lo) noexcept:
    """Return the value at slot (hi, lo) of c, borrowed, or NULL if unset."""
    cdef PyObject** chunk
    if hi < c.nchunks:
        chunk = c.chunks[hi]
        if chunk != NULL:
            return chunk[lo]
    return NULL


cdef inline Container _storage(Container c, str group):
    """Return the container whose area holds `group`'s variables for c."""
    if c.state == DEAD:
        return c  # every access through a dead container raises, shared groups included
    if not enabled:
        return _host
    if c.owners is None:
        return c
    return <Container>c.owners.get(group, c)


cdef Container _new_host():
    global _next_id
    cdef Container c = Container.__new__(Container)
    c._id = _next_id
    _next_id += 1
    c._name = "host"
    c._shared = frozenset()
    c.state = LIVE
    _holding[c] = None
    return c


cdef Container _host = _new_host()
#: The host container: current wherever no container was entered.
host = _host


def _release(Py_ssize_t slot, str name, ref):
    """Free a dead variable's slot: clear its value in every container, then reuse the slot."""
    cdef Py_ssize_t hi = slot >> CHUNK_SHIFT, lo = slot & CHUNK_MASK
    cdef PyObject* value
    cdef PyObject** chunk
    if _by_name.get(name) is ref:
        del _by_name[name]
    _record_refs[slot] = None
    dropped = []
    for c in list(_holding):
        value = _peek(<Container>c, hi, lo)
        if value != NULL:
            (<Container>c).chunks[hi][lo] = NULL
            dropped.append(<object>value)  # takes a reference ...
            Py_DECREF(<object>value)  # ... and this drops the area's
    heapq.heappush(_free_slots, slot)
    del dropped  # values die after the slot is clean everywhere


cdef _Record _declare(str name, str group, object default, bint has_default, object factory,
                      object on_exit):
    ref = _by_name.get(name)
    cdef _Record record = ref() if ref is not None else None
    cdef Py_ssize_t slot
    if record is None:
        slot = heapq.heappop(_free_slots) if _free_slots else len(_record_refs)
        record = _Record.__new__(_Record)
        record.name = name
        record.group = group
        record.slot = slot
        record.seq = next(_declaration_seq)
        ref = weakref.ref(record, functools.partial(_release, slot, name))
        if slot == len(_record_refs):
            _record_refs.append(ref)
        else:
            _record_refs[slot] = ref
        _by_name[name] = ref
        _groups.add(group)
    elif record.group != group:
        raise ValueError(
            f"PerContainer {name!r} is already declared in group {record.group!r}; "
            f"a redeclaration must use the same group, not {group!r}")
    # A redeclaration (importlib.reload) keeps the slot and values, and takes the new spec.
    record.default = default
    record.has_default = has_default
    record.factory = factory
    record.on_exit = on_exit
    return record


@cython.final
cdef class _Pending:
    """A factory call in progress for one (container, slot): racing threads wait for it."""
    cdef object thread
    cdef object done


cdef dict _pending = {}


@cython.final
cdef class PerContainer:
    """A module-level variable with one value per container, read through the current one."""
    cdef _Record record
    cdef Py_ssize_t hi  # slot >> CHUNK_SHIFT
    cdef Py_ssize_t lo  # slot & CHUNK_MASK
    cdef object __weakref__

    def __init__(self, name, *, default=_UNSET, factory=None, group="default", on_exit=None):
        cdef bint has_default = default is not _UNSET
        check_declaration(name, default, has_default, factory, group, on_exit)
        self.record = _declare(name, group, default, has_default, factory, on_exit)
        self.hi = self.record.slot >> CHUNK_SHIFT
        self.lo = self.record.slot & CHUNK_MASK

    @classmethod
    def __class_getitem__(cls, item):
        return GenericAlias(cls, item)

    @property
    def name(self):
        """The variable's name (its identity: declaring it again binds to the same slot)."""
        return self.record.name

    @property
    def group(self):
        """The group that Container(share=...) names to share this variable with a parent."""
        return self.record.group

    def __repr__(self):
        return f"<PerContainer {self.record.name!r} group={self.record.group!r}>"

    # -- reading ----------------------------------------------------------------------------
    def get(self):
        """Return the current container's value (running the factory once if needed)."""
        cdef PyObject* c = _current_ptr()
        cdef PyObject* value
        if (<Container>c).owners is None:
            value = _peek(<Container>c, self.hi, self.lo)
            if value != NULL:
                return <object>value
        return self.of(<Container>c)

    def of(self, container):
        """Return the value in `container` without entering it."""
        if not isinstance(container, Container):
            raise TypeError(f"of() takes a Container, not {type(container).__name__}")
        cdef Container c = _storage(<Container>container, self.record.group)
        cdef PyObject* value = _peek(c, self.hi, self.lo)
        if value != NULL:
            return <object>value
        return self._miss(c)

    cdef object _miss(self, Container owner):
        cdef _Record record = self.record
        if owner.state == DEAD:
            raise ContainerClosedError(f"{record.name!r} read in closed {owner!r}")
        if record.factory is not None:
            return self._run_factory(owner)
        if record.has_default:
            return record.default
        raise LookupError(
            f"PerContainer {record.name!r} is not set in {owner!r} and has no default; "
            "set() it first, or declare it with default= or factory=")

    cdef object _run_factory(self, Container owner):
        """Run the factory once for (owner, slot); threads that race wait and share its result."""
        cdef PyObject* held
        cdef _Pending pending
        key = (owner, self.record.slot)
        while True:
            # Atomic under the GIL: no Python code runs from the check to the insertion.
            if owner.state == DEAD:
                raise ContainerClosedError(f"{self.record.name!r} read in closed {owner!r}")
            held = _peek(owner, self.hi, self.lo)
            if held != NULL:
                return <object>held
            pending = _pending.get(key)
            if pending is None:
                pending = _Pending.__new__(_Pending)
                pending.thread = threading.get_ident()
                pending.done = threading.Event()
                _pending[key] = pending
                break
            if pending.thread == threading.get_ident():
                raise ContainerError(
                    f"the factory of {self.record.name!r} reads {self.record.name!r} itself")
            pending.done.wait()
        cdef PyObject** where
        installed = _UNSET
        try:
            value = _call_inside(owner, self.record.factory, ())
            if owner.state != DEAD:
                held = _peek(owner, self.hi, self.lo)
                if held != NULL:
                    installed = <object>held  # a set() meanwhile wins
                else:
                    where = owner._slot_for_write(self.hi, self.lo)
                    Py_INCREF(value)
                    where[0] = <PyObject*>value
                    installed = value
        finally:
            del _pending[key]
            pending.done.set()
        if installed is not value:  # the value never joined the container: hand it back
            if self.record.on_exit is not None:
                self.record.on_exit(value)
        if installed is _UNSET:
            raise ContainerClosedError(f"{owner!r} was closed while {self.record.name!r} was made")
        return installed

    # -- writing ----------------------------------------------------------------------------
    def set(self, value):
        """Set the current container's value."""
        cdef PyObject* c = _current_ptr()
        cdef PyObject** where
        if (<Container>c).owners is None:
            where = (<Container>c)._slot_for_write(self.hi, self.lo)
        else:
            where = _storage(<Container>c, self.record.group)._slot_for_write(self.hi, self.lo)
        cdef PyObject* old = where[0]
        Py_INCREF(value)
        where[0] = <PyObject*>value
        Py_XDECREF(old)  # last: the old value's __del__ may run anything

    @property
    def value(self):
        """The current container's value (get() / set())."""
        return self.get()

    @value.setter
    def value(self, value):
        self.set(value)

    def add(self, delta=1):
        """Add delta to the current container's value and return the new value."""
        cdef Container c = _current()
        if c.owners is not None:
            c = _storage(c, self.record.group)
        cdef PyObject* held = _peek(c, self.hi, self.lo)
        if held != NULL:
            new = <object>held + delta
        else:
            new = self._miss(c) + delta
        # Atomic with the read above for built-in numbers (their + runs no Python code).
        cdef PyObject** where = c._slot_for_write(self.hi, self.lo)
        cdef PyObject* old = where[0]
        Py_INCREF(new)
        where[0] = <PyObject*>new
        Py_XDECREF(old)
        return new

    def reset(self):
        """Make the variable unset again in the current container."""
        cdef Container c = _storage(_current(), self.record.group)
        if c.state == DEAD:
            raise ContainerClosedError(f"{self.record.name!r} reset in closed {c!r}")
        cdef PyObject* old = _peek(c, self.hi, self.lo)
        if old != NULL:
            c.chunks[self.hi][self.lo] = NULL
            Py_DECREF(<object>old)

    # -- across containers ------------------------------------------------------------------
    def items(self):
        """Return (container, value) for each live container whose own storage holds a value."""
        cdef PyObject* value
        pairs = []
        for c in containers():
            value = _peek(<Container>c, self.hi, self.lo)
            if value != NULL:
                pairs.append((c, <object>value))
        return pairs

    def sum(self):
        """Return the total of the values over all live containers (0 if none is set)."""
        cdef PyObject* value
        total = 0
        for c in containers():
            value = _peek(<Container>c, self.hi, self.lo)
            if value != NULL:
                total = total + <object>value
        return total


def per_container(fn=None, /, *, name=None, group="default", on_exit=None):
    """Declare a per-container variable whose value the decorated function makes."""

    def declare(factory):
        return PerContainer(decorated_name(factory, name), factory=factory, group=group,
                            on_exit=on_exit)

    return declare if fn is None else declare(fn)


def wrap(fn):
    """Return a callable that runs fn in the container current now (for threads and callbacks)."""
    if fn is None or not callable(fn):
        raise TypeError(f"wrap() takes a callable, not {type(fn).__name__}")
    container = _current()

    @functools.wraps(fn)
    @cython.binding(True)  # a function object that functools.wraps can name
    def in_container(*args, **kwargs):
        with container:
            return fn(*args, **kwargs)

    return in_container
