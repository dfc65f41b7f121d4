"""The pure-Python twin of the core: the readable reference of the semantics.

Words borrowed from the kernel: a *slot* is a variable's fixed index into every container's
*area* (the per-cpu offset); *current* is the effective container of this thread or asyncio task
(econtainer). `_core_c.pyx` implements the same names with the same behaviour in Cython.
"""

from __future__ import annotations

import functools
import heapq
import inspect
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterable
from contextvars import ContextVar
from types import CoroutineType
from typing import (TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, SupportsIndex, TypeVar, cast,
                    overload)

import numpy as np

from ._checks import (check_callable, check_declaration, check_share, decorated_name, not_copyable,
                      not_initialised)
from ._config import DISABLED
from ._contextvar_reset import reset
from ._deferred import Deferred
from ._errors import ContainerClosedError, ContainerError, foreign_current, report_unraisable
from ._flows import current_greenlet, cycle_error, green_event
from ._rows_py import DATA_ONLY, WITH_IDENT, WITH_LIVE, Column, RowSpace
from ._typed import (BOOL, VIEW, Snapshot, TypedSpec, check_redeclaration, maximum, mean, locate,
                     minimum, spec_for, total, values)

__all__ = [
    "ENABLED",
    "Container",
    "ContainerClosedError",
    "ContainerError",
    "PerContainer",
    "containers",
    "current",
    "enter_from",
    "host",
    "leave",
    "per_container",
    "wrap",
]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
S = TypeVar("S", bound=np.generic)  # the numpy scalar type of a typed array variable

if TYPE_CHECKING:
    import sys
    from typing import Protocol, SupportsFloat, TypeAlias

    import numpy.typing as npt

    if sys.version_info >= (3, 11):
        from typing import Self
    else:  # checkers know typing_extensions; it is never imported at run time
        from typing_extensions import Self

    # What a typed variable's dtype= tells a checker about the values get() returns: bool,
    # int or float for a scalar; for anything else (a dtype string), Any.
    _BoolDType: TypeAlias = type[bool] | type[np.bool_] | np.dtype[np.bool_]
    _IntDType: TypeAlias = type[int] | type[np.integer[Any]] | np.dtype[np.integer[Any]]
    _FloatDType: TypeAlias = type[float] | type[np.floating[Any]] | np.dtype[np.floating[Any]]
    # A typed array variable's shape: an int or a non-empty tuple (() makes a scalar).
    _Shape: TypeAlias = int | tuple[int, ...]

    class _Declarator(Protocol):
        """What @per_container(...) without dtype= or on_exit= returns: generic in the
        factory's return type, which a checker learns only at the decorated function."""

        def __call__(self, factory: Callable[[], T], /) -> PerContainer[T]: ...


def _signature_of(init: Callable[..., None]) -> inspect.Signature:
    """Return what inspect.signature() shows for a class: its __init__'s parameters (it would
    read the __new__ that takes anything, so that __init__'s checks give the messages)."""
    signature = inspect.signature(init)
    return signature.replace(parameters=list(signature.parameters.values())[1:])


#: False when PERCONTAINER_DISABLE was set at import: every container uses the host's storage.
ENABLED: bool = not DISABLED


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()

# Teardown runs exit hooks in rounds, until no value is left without its hook: a bound for
# hooks that make a new value every time.
_HOOK_ROUNDS = 100

# add()'s operands whose + runs no Python code, so that it can run under the lock.
_ATOMIC_ADD = frozenset({int, float, complex})

# Life cycle of a container. LIVE: enterable. CLOSING: close() is closing the descendants.
# WAITING: closed, but a thread or task is still inside it (by `with`), or a descendant still
# waits; teardown comes when the last of them is gone. TEARDOWN: exit hooks are running, the
# values still readable. DEAD: values dropped; any access raises.
_LIVE, _CLOSING, _WAITING, _TEARDOWN, _DEAD = range(5)

# One lock guards the registries and life-cycle transitions. It is reentrant because dropping
# a value can run arbitrary code (a __del__) that declares variables or creates containers.
# User code (factories, exit hooks) never runs while it is held.
_lock = threading.RLock()


class _Record:
    """One declared variable: its slot and how to make its value."""

    __slots__ = ("name", "group", "slot", "seq", "default", "has_default", "factory", "on_exit",
                 "column", "variable", "__weakref__")

    def __init__(self, name: str, group: str, slot: int, seq: int) -> None:
        self.name = name
        self.group = group
        self.slot = slot
        self.seq = seq  # declaration order, for exit hooks (slots are reused, so not slot order)
        self.default: Any = _UNSET
        self.has_default = False
        self.factory: Callable[[], Any] | None = None
        self.on_exit: Callable[[Any], object] | None = None
        self.column: Column | None = None  # a typed variable's storage
        # The PerContainer last bound to it, what unpickling its name returns (not a strong
        # reference: the record lives only while a PerContainer does).
        self.variable: weakref.ref[PerContainer[Any]] | None = None


class _Unbound(_Record):
    """The record of a PerContainer that __init__ never bound: reading any field raises."""

    __slots__ = ()

    def __init__(self) -> None:  # sets no field, so that every read goes to __getattr__
        pass

    def __getattr__(self, attr: str) -> Any:
        raise TypeError(not_initialised("PerContainer"))


_UNBOUND = _Unbound()


# Typed variables' storage: every container holds a row of it (_typed.py, _rows_py.py).
_rows = RowSpace()


# The variable registry. A record lives while any PerContainer object refers to it; when the
# last one is collected, _release clears its slot in every container and frees the slot.
_record_refs: list[weakref.ref[_Record] | None] = []  # slot -> record
_free_slots: list[int] = []  # a heap: the lowest free slot is reused first, keeping areas short
_by_name: dict[str, weakref.ref[_Record]] = {}
_groups: set[str] = {"default"}
_declaration_seq = itertools.count()

# Every container that still holds storage (LIVE, CLOSING or TEARDOWN), in creation order.
_holding: dict[Container, None] = {}
_ids = itertools.count()


def _release(slot: int, name: str, column: Column | None, ref: weakref.ref[_Record]) -> None:
    """Free a dead variable's slot: clear its value in every container, then reuse the slot."""
    dropped = []
    if column is not None:
        _rows.drop_column(column)
    with _lock:
        if _by_name.get(name) is ref:
            del _by_name[name]
        _record_refs[slot] = None
        # A copy: a gc pass in the loop may close a container, reentering the lock (from 3.12
        # a gc pass may start at any loop's back edge).
        for container in list(_holding):
            area = container._area
            if area is not None and slot in area:
                dropped.append(area.pop(slot))
        heapq.heappush(_free_slots, slot)
    del dropped  # values die here, outside the lock, after the slot is clean


def _declare(name: str, group: str, default: Any, has_default: bool,
             factory: Callable[[], Any] | None,
             on_exit: Callable[[Any], object] | None, spec: TypedSpec | None) -> _Record:
    with _lock:  # one declaration at a time; reentrant, for a finalizer that declares one
        record = _declared(name)
        if record is None:
            record = _new_record(name, group, spec)
            if record is None:  # a finalizer declared `name` meanwhile: this redeclares it
                return _declare(name, group, default, has_default, factory, on_exit, spec)
        elif record.group != group:
            raise ValueError(
                f"PerContainer {name!r} is already declared in group {record.group!r}; "
                f"a redeclaration must use the same group, not {group!r}"
            )
        else:
            check_redeclaration(name, record.column.spec if record.column else None, spec)
        # A redeclaration (importlib.reload) keeps the slot and values, and takes the new spec.
        record.default, record.has_default = default, has_default
        record.factory, record.on_exit = factory, on_exit
        if spec is not None:
            assert record.column is not None  # _check_same_storage
            record.column.set_spec(spec)  # the same layout; new containers take the new default
        return record


def _declared(name: str) -> _Record | None:
    """Return the live record of the variable declared as `name`, or None."""
    ref = _by_name.get(name)
    return ref() if ref is not None else None


def _new_record(name: str, group: str, spec: TypedSpec | None) -> _Record | None:
    """Make and register the record of a new variable (locked); return None if a finalizer
    declared `name` meanwhile (on this thread, while the record was made).

    The slot is claimed first, in one step: making the record allocates, and an allocation can
    run a finalizer that declares another variable on this thread, which must not be handed
    the same slot."""
    slot = heapq.heappop(_free_slots) if _free_slots else _new_slot()
    column: Column | None = None
    try:
        record = _Record(name, group, slot, next(_declaration_seq))
        if spec is not None:
            column = record.column = _rows.add_column(spec, group)
        ref = weakref.ref(record, functools.partial(_release, slot, name, column))
    except BaseException:
        if column is not None:
            _rows.drop_column(column)
        heapq.heappush(_free_slots, slot)
        raise
    if _declared(name) is not None:
        del record  # ours dies now, while `ref` lives: its callback frees the slot and column
        return None
    _record_refs[slot] = ref
    _by_name[name] = ref
    _groups.add(group)
    return record


def _new_slot() -> int:
    """Return a slot past the last one, reserved (None) until its record is registered."""
    _record_refs.append(None)
    return len(_record_refs) - 1


class _Frame:
    """What the current-container ContextVar holds: one entered container and its token.

    An entry (`with c:`, enter_from) counts as one user of its container from __enter__ to
    __exit__; a frame dropped while still entered (its task, Context or generator discarded
    without leaving) stops counting when it is collected, so no caller can leave a container
    that can never be torn down."""

    __slots__ = ("container", "token", "entered")

    def __init__(self, container: Container) -> None:
        self.container = container
        self.token: Any = None
        self.entered = False  # counted in container._users until left or collected

    def count(self) -> None:
        """Count this entry as a user of its live container (an interrupt can fall between the
        two stores here only: the compiled core has no such window)."""
        container = self.container
        with _lock:
            if container._state != _LIVE:
                raise ContainerClosedError(f"cannot enter closed {container!r}")
            container._users += 1
            self.entered = True  # from here on, a frame that dies entered stops counting

    def leave(self) -> None:
        """Stop counting this entry (once)."""
        if self.entered:
            self.entered = False
            self.container._drop_user()

    def __del__(self) -> None:
        if self.entered:
            self.entered = False
            try:
                self.container._drop_user(finalizing=True)
            except BaseException as error:  # noqa: BLE001  # a finalizer has no caller to raise to
                report_unraisable("Exception leaving a discarded entry", error, self.container)


_current_frame: ContextVar[_Frame] = ContextVar("percontainer.current")

# Containers whose last user was an entry dropped unleft (its frame's finalizer counted it
# out), waiting for their teardown: see _deferred.py for why it is not run in the finalizer.
_due_teardowns = Deferred("the teardown of a discarded entry's container")


def current() -> Container:
    """Return the container current in this thread or asyncio task (the host if none)."""
    frame = _current_frame.get(_HOST_FRAME)
    if frame.__class__ is not _Frame:
        raise foreign_current(frame)
    return frame.container


def _describe_current() -> str:
    """Name what is current, for an error message (never raises)."""
    try:
        return repr(current())
    except ContainerError:
        return repr(_current_frame.get(None))


def containers() -> list[Container]:
    """Return the live (not closed) containers, the host first, in creation order."""
    with _lock:
        # A copy first: a gc pass during the loop may close a container (see _release).
        return [c for c in list(_holding) if c._state == _LIVE]


class Container:
    """A tenant: its own copy of every per-container variable."""

    # No __weakref__, as in the compiled core, where a server's many thousands of containers
    # would pay 8 bytes each for it: attach state to a container with a PerContainer.
    __slots__ = ("_id", "_name", "_parent", "_shared", "_owners", "_area", "_row", "_state",
                 "_users", "_pins", "_children")
    _id: int
    _name: str | None
    _parent: Container | None
    _shared: frozenset[str]
    _owners: dict[str, Container] | None  # shared group -> the container that stores it
    _area: dict[int, Any] | None  # slot -> value, set slots only; None once values are dropped
    _row: int  # its row in the typed variables' storage; -1 for none (disabled mode, dead)
    _state: int
    _users: int  # threads and tasks inside (by `with`) and pins; teardown waits for 0
    _pins: int  # pin() calls not yet unpinned
    _children: dict[Container, None] | None  # children not yet torn down, made on the first

    def __new__(cls, *args: Any, **kwargs: Any) -> Container:
        if len(args) > 1:  # Python's own message would not say what to write instead
            example = "host" if args[1] is host else "..."
            raise TypeError(f"Container() takes 1 positional argument (the name) but {len(args)} "
                            "were given: parent and share are keyword-only, as in "
                            f"Container({args[0]!r}, parent={example})")
        container = super().__new__(cls)
        # Until __init__ runs (made by __new__ alone, it never does): dead, with nothing stored;
        # id 0, which only the host has otherwise.
        container._id = 0
        container._name = None
        container._parent = None
        container._shared = frozenset()
        container._owners = None
        container._area = None
        container._row = -1
        container._state = _DEAD
        container._users = 0
        container._pins = 0
        container._children = None
        return container

    def __init__(self, name: str | None = None, *, parent: Container | None = None,
                 share: Iterable[str] = ()) -> None:
        if self._id != 0 or self is host:
            raise TypeError("Container.__init__ may be called once only")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Container name must be a str or None, not {type(name).__name__}")
        if parent is None:
            parent = current()
        elif not isinstance(parent, Container):
            raise TypeError(f"parent must be a Container, not {type(parent).__name__}")
        shared = check_share(share, _groups) if share != () else frozenset()
        owners: dict[str, Container] | None = None
        if shared and ENABLED:
            # Flatten the sharing chain once: a shared group's owner is the parent's owner.
            parent_owners = parent._owners or {}
            owners = {group: parent_owners.get(group, parent) for group in shared}
        with _lock:
            if parent._state != _LIVE:
                raise ContainerClosedError(f"cannot create a child of closed {parent!r}")
            self._id = next(_ids)
            self._row = _rows.take(self._id, shared) if ENABLED else -1
            self._name = name
            self._parent = parent
            self._shared = shared
            self._owners = owners
            self._area = {}
            self._users = 0
            self._pins = 0
            self._children = None
            self._state = _LIVE
            if parent is not host:  # the host is never closed, so it needs no list of children
                if parent._children is None:
                    parent._children = {}
                parent._children[self] = None
            _holding[self] = None

    __signature__ = _signature_of(__init__)

    # -- attributes -----------------------------------------------------------------------
    @property
    def id(self) -> int:
        """The container's unique id; never reused in the process. The host's is 0."""
        return self._id

    @property
    def name(self) -> str | None:
        """The name given at creation."""
        return self._name

    @property
    def parent(self) -> Container | None:
        """The container this one was created from; None for the host."""
        return self._parent

    @property
    def shared(self) -> frozenset[str]:
        """The variable groups this container shares with its parent."""
        return self._shared

    @property
    def closed(self) -> bool:
        """True once close() was called."""
        return self._state != _LIVE

    def __repr__(self) -> str:
        if self._id == 0 and self is not host:
            return "<Container not initialised>"
        closed = " closed" if self.closed else ""
        return f"<Container id={self._id} name={self._name!r}{closed}>"

    def __reduce_ex__(self, protocol: SupportsIndex) -> NoReturn:
        raise TypeError(not_copyable(self))

    def __reduce__(self) -> NoReturn:
        raise TypeError(not_copyable(self))

    # -- entering ---------------------------------------------------------------------------
    def __enter__(self) -> Container:  # noqa: PYI034  # Container is final in the compiled core
        if not ENABLED:
            if self._state != _LIVE:
                raise ContainerClosedError(f"cannot enter closed {self!r}")
            return self
        frame = _Frame(self)
        below = _current_frame.get(_HOST_FRAME)
        try:
            frame.count()
            frame.token = _current_frame.set(frame)
            return self
        except BaseException:  # e.g. KeyboardInterrupt: the thread is not left inside
            if _current_frame.get(None) is frame:
                if frame.token is not None:
                    reset(_current_frame, frame.token, frame)
                else:  # interrupted before the token was stored: what was current, again
                    _current_frame.set(below)
            frame.leave()
            raise

    def __exit__(self, *exc_info: object) -> None:
        if not ENABLED:
            return
        frame: Any = None
        try:
            frame = _current_frame.get(None)
            if frame.__class__ is not _Frame or frame.container is not self or not frame.entered:
                raise ContainerError(f"exiting {self!r} while {_describe_current()} is current: "
                                     "with-blocks must nest")
            try:
                reset(_current_frame, frame.token, frame)
            except ValueError:
                raise ContainerError(
                    f"{self!r} was entered in another thread or task than the one exiting it"
                ) from None
            frame.leave()
        except ContainerError:
            raise
        except BaseException:  # e.g. KeyboardInterrupt: the block is over, so leave all the same
            if frame is None:
                frame = _current_frame.get(None)
            if frame.__class__ is _Frame and frame.container is self and frame.entered:
                if _current_frame.get(None) is frame:
                    reset(_current_frame, frame.token, frame)
                frame.leave()
            raise

    async def __aenter__(self) -> Container:  # noqa: PYI034  # see __enter__
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)

    def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call fn(*args, **kwargs) inside this container and return its result (a coroutine
        comes back wrapped, so that its body runs inside the container too when awaited)."""
        with self:
            result = fn(*args, **kwargs)
        if type(result) is CoroutineType:  # R is then a coroutine type: hand back another
            return cast(R, _run_inside(self, cast("Coroutine[Any, Any, Any]", result)))
        return result

    @property
    def in_use(self) -> bool:
        """True while a thread or task is inside (by `with`) or the container is pinned."""
        return self._users > 0

    @property
    def pinned(self) -> bool:
        """True while a pin() awaits its unpin()."""
        return self._pins > 0

    def pin(self) -> None:
        """Count one more user without entering: close() tears down only after unpin()."""
        with _lock:
            if self._state != _LIVE:
                raise ContainerClosedError(f"cannot pin closed {self!r}")
            self._pins += 1
            self._users += 1

    def unpin(self) -> None:
        """Undo one pin(); a container closed meanwhile is torn down by its last user."""
        with _lock:
            if self._pins == 0:
                raise ContainerError(f"unpin() of {self!r} without a matching pin()")
            self._pins -= 1
        self._drop_user()

    def _drop_user(self, finalizing: bool = False) -> None:
        """Count one user fewer; the last one out of a closed container tears it down, at
        once, or from a finalizer (a discarded entry) later, on the teardown worker."""
        with _lock:
            self._users -= 1
            last_out = self._state == _WAITING and self._unused()
            if last_out:
                self._state = _TEARDOWN
        if last_out:
            if finalizing:
                _due_teardowns.defer(_teardown_discarded, self)
            else:
                self._teardown(raise_errors=False)

    # -- closing ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close this container and its live descendants, run exit hooks, drop the values."""
        if self is host:
            raise ContainerError("the host container cannot be closed")
        if self._id == 0:
            raise TypeError(not_initialised("Container"))
        with _lock:
            if self._state != _LIVE:
                return
            self._state = _CLOSING  # from here on, nothing can enter it or create children in it
            if self._row >= 0:
                _rows.close(self._row, self._shared)
        errors: list[BaseException] = []
        for child in list(self._children or ()):
            try:
                child.close()
            except BaseException as error:  # noqa: BLE001  # close whatever a child raised
                errors.append(error)
        with _lock:
            teardown_now = self._unused()
            self._state = _TEARDOWN if teardown_now else _WAITING
        if teardown_now:
            errors.extend(self._teardown(raise_errors=True))
        if errors:
            raise errors[0]

    def _unused(self) -> bool:
        """Return True when no thread or task is inside and no child awaits teardown (locked)."""
        return self._users == 0 and not self._children

    def _teardown(self, raise_errors: bool) -> list[BaseException]:
        """Run the exit hooks in reverse declaration order, then drop every value.

        Every hook runs whatever one raised, and teardown completes. raise_errors (close()):
        return every error, for close() to raise the first. Otherwise (the last user out)
        report Exceptions to sys.unraisablehook, and raise the first other BaseException
        (KeyboardInterrupt, SystemExit, CancelledError: a request to stop) once done."""
        errors: list[BaseException] = []
        ran: dict[tuple[int, int], Any] = {}
        for _ in range(_HOOK_ROUNDS):
            hooks = self._hooks_due(ran)
            if not hooks:
                break
            for _, on_exit, value in hooks:
                try:
                    _call_inside(self, on_exit, value)
                except BaseException as error:  # noqa: BLE001  # every hook runs, whatever raised
                    if raise_errors or not isinstance(error, Exception):
                        errors.append(error)
                    else:
                        report_unraisable(f"Exception in exit hook of {self!r}", error, on_exit)
        else:
            runaway = ContainerError(
                f"exit hooks of {self!r} kept making new values for {_HOOK_ROUNDS} rounds; "
                "the values left were dropped without their hooks")
            if raise_errors:
                errors.append(runaway)
            else:
                report_unraisable(f"Exception in teardown of {self!r}", runaway, self)
        del ran, hooks
        parent = self._parent
        assert parent is not None  # the host is never torn down
        with _lock:
            self._state = _DEAD
            values, self._area = self._area, None
            if self._row >= 0:
                _rows.release(self._row)
                self._row = -1
            _holding.pop(self, None)
            if parent._children is not None:
                parent._children.pop(self, None)
            parent_last = parent._state == _WAITING and parent._unused()
            if parent_last:
                parent._state = _TEARDOWN
        del values  # dropped outside the lock: a value's __del__ may use the library
        if parent_last:  # the parent was closed while this one still had someone inside
            try:
                parent._teardown(raise_errors=False)
            except BaseException as error:  # noqa: BLE001  # raised after this one's own
                errors.append(error)
        if errors and not raise_errors:
            raise errors[0]
        return errors

    def _hooks_due(self, ran: dict[tuple[int, int], Any]) -> list[tuple[int, Any, Any]]:
        """Return (seq, on_exit, value) for each value in the area whose hook has not run yet,
        latest declared first; note them in `ran` (which keeps them, so ids stay unique).

        Hooks run while the values are readable, so a hook may make new ones (a factory
        variable it reads): teardown asks again until no value is left without its hook."""
        with _lock:
            items = list((self._area or {}).items())
        hooks = []
        for slot, value in items:
            ref = _record_refs[slot] if slot < len(_record_refs) else None
            record = ref() if ref is not None else None
            if record is None or record.on_exit is None or (slot, id(value)) in ran:
                continue
            ran[slot, id(value)] = value
            hooks.append((record.seq, record.on_exit, value))
        hooks.sort(key=lambda hook: hook[0], reverse=True)
        return hooks


def _teardown_discarded(container: Container) -> None:
    """The teardown of a discarded entry's container, on the worker: no caller to raise to."""
    if container._state != _TEARDOWN:  # only what _drop_user queued
        return
    for error in container._teardown(raise_errors=True):
        report_unraisable(f"Exception in the teardown of {container!r}", error, container)


async def _run_inside(container: Container, coroutine: Coroutine[Any, Any, R]) -> R:
    """Await coroutine inside container (what run() and wrap() hand back for a coroutine)."""
    async with container:
        return await coroutine


def enter_from(containers: dict[Any, Container], key: Any) -> Container | None:
    """Enter the live container containers[key] and return it (leave() leaves it), or return
    None if there is none or it is closed: a registry's lookup and `with` in one call."""
    container = containers.get(key)
    if container is None:
        return None
    if not isinstance(container, Container):
        raise TypeError(
            f"enter_from() maps keys to Containers, not {type(container).__name__}")
    if container._state != _LIVE:
        return None
    try:
        container.__enter__()
    except ContainerClosedError:  # closed by another thread since the check
        return None
    return container


def leave(container: Container) -> None:
    """Leave the container that enter_from() (or __enter__) entered in this thread or task."""
    container.__exit__(None, None, None)


def _call_inside(container: Container, fn: Callable[..., R], *args: Any) -> R:
    """Call fn inside container without the closed check (for hooks and factories)."""
    if not ENABLED:
        return fn(*args)
    frame = _Frame(container)  # not an entry: it counts no user
    token = _current_frame.set(frame)
    try:
        return fn(*args)
    finally:
        reset(_current_frame, token, frame)


def _new_host() -> Container:
    container = Container.__new__(Container)
    container._id = next(_ids)
    container._name = "host"
    container._parent = None
    container._shared = frozenset()
    container._owners = None
    container._area = {}
    container._row = _rows.take(container._id, frozenset())
    container._users = 0
    container._pins = 0
    container._children = None
    container._state = _LIVE
    _holding[container] = None
    return container


#: The host container: current wherever no container was entered.
host: Container = _new_host()
_HOST_FRAME = _Frame(host)  # what the current-container ContextVar means when it has no value


class _Pending:
    """A factory call in progress for one (container, slot): other flows wait for it.

    Built whole before it is published in _pending, so a racing reader never sees half of it.
    Its owner is the flow running the factory: the pendings in its _making context."""

    __slots__ = ("name", "thread", "greenlet", "done", "green", "blocked_on")

    def __init__(self, name: str) -> None:
        self.name = name
        self.thread = threading.get_ident()
        self.greenlet = current_greenlet()
        self.done = threading.Event()
        self.green: Any = None  # a gevent Event, made by a waiter in another greenlet
        # What the owner waits for (from another flow's factory): the wait-for graph's edge.
        self.blocked_on: _Pending | None = None

    def finish(self) -> None:
        """Wake every reader waiting for this factory."""
        self.done.set()
        if self.green is not None:
            self.green.set()


_pending: dict[tuple[Container, int], _Pending] = {}
# The factory calls this flow is making, outermost first: set around each factory call, so a
# greenlet, a thread or a copy of the context (asyncio.to_thread) that reads inside a factory
# knows it is that factory's flow: waiting for it would wait for itself.
_making: ContextVar[tuple[_Pending, ...]] = ContextVar("percontainer.making", default=())


def _check_wait(pending: _Pending, mine: _Pending, making: tuple[_Pending, ...]) -> None:
    """Raise if waiting for `pending` would never end; else mark this flow's factories as
    blocked on it (locked: the check and the mark are one step, so of two flows closing a
    cycle, the second sees the first's mark)."""
    chain = [pending]
    for _ in range(len(_pending) + 1):  # a bound: each step is another pending
        step = chain[-1]
        for index, made in enumerate(making):
            if made is step:  # the chain of waits comes back to this flow
                raise cycle_error([p.name for p in making[index:]] + [p.name for p in chain])
        if step.blocked_on is None:
            break
        chain.append(step.blocked_on)
    if pending.thread == mine.thread and (pending.greenlet is None
                                          or pending.greenlet is mine.greenlet):
        # The owner is this very flow, read through another context (contextvars.Context.run):
        # it is suspended below this call, waiting would wait for itself.
        raise cycle_error([pending.name, pending.name])
    for made in making:
        made.blocked_on = pending


def _wait(pending: _Pending, mine: _Pending) -> None:
    """Wait until pending's factory is done (not locked)."""
    if pending.thread != mine.thread:
        pending.done.wait()
        return
    # Another greenlet of this thread owns it: a blocked thread would never run it.
    if pending.green is None:
        pending.green = green_event(pending.name)
    if not pending.done.is_set():
        pending.green.wait()


def _forget_pending_in_child() -> None:
    """After fork(), in the child: only the forking thread survives (with its greenlets).
    Factories that other threads were running will never finish there, so their pending state
    goes (a read runs the factory again); this thread's own go on, with fresh events to wake
    on (another thread may have held an old one's lock at fork())."""
    global _lock
    _lock = threading.RLock()  # another thread may have held it at fork() too
    thread = threading.get_ident()
    for key, pending in list(_pending.items()):
        if pending.thread == thread:
            pending.done = threading.Event()
        else:
            del _pending[key]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pending_in_child)


def _storage(container: Container, group: str) -> Container:
    """Return the container whose area holds `group`'s variables for `container`."""
    if container._area is None:
        return container  # dead: every access through it raises, shared groups included
    if not ENABLED:
        return host
    owners = container._owners
    return container if owners is None else owners.get(group, container)


class PerContainer(Generic[T]):
    """A module-level variable with one value per container, read through the current one."""

    __slots__ = ("_record", "_slot", "_column", "__weakref__")

    # Self, not PerContainer[Any]: checkers then take the value type from __init__'s overloads.
    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        if len(args) > 1:  # Python's own message would not say what to write instead
            raise TypeError(f"PerContainer() takes 1 positional argument (the name) but "
                            f"{len(args)} were given: default and the rest are keyword-only, as "
                            f"in PerContainer({args[0]!r}, default={args[1]!r})")
        var = super().__new__(cls)
        # Until __init__ binds it (made by __new__ alone, it never is): reads miss the area,
        # and everything else reads the record, which raises (see _Unbound).
        var._record = _UNBOUND
        var._slot = -1
        var._column = None
        return var

    # The declarations a checker tells apart, so that each infers the value type: an object
    # variable's is its default's or its factory's (or the annotation's); a typed one's is
    # what get() returns for its dtype and shape. An object variable takes no shape=, and a
    # typed one no factory= or on_exit= (both raise TypeError).
    @overload
    def __init__(self, name: str, *, default: T, group: str = "default",
                 on_exit: Callable[[T], object] | None = None) -> None: ...

    @overload
    def __init__(self, name: str, *, factory: Callable[[], T], group: str = "default",
                 on_exit: Callable[[T], object] | None = None) -> None: ...

    @overload
    def __init__(self, name: str, *, group: str = "default",
                 on_exit: Callable[[T], object] | None = None) -> None: ...

    @overload
    def __init__(self: PerContainer[bool], name: str, *, dtype: _BoolDType,
                 shape: tuple[()] = (), default: bool | np.bool_ = ...,
                 group: str = "default") -> None: ...

    @overload
    def __init__(self: PerContainer[int], name: str, *, dtype: _IntDType, shape: tuple[()] = (),
                 default: SupportsIndex = ..., group: str = "default") -> None: ...

    @overload
    def __init__(self: PerContainer[float], name: str, *, dtype: _FloatDType,
                 shape: tuple[()] = (), default: SupportsFloat | SupportsIndex = ...,
                 group: str = "default") -> None: ...

    @overload
    def __init__(self: PerContainer[npt.NDArray[np.void]], name: str, *,
                 dtype: np.dtype[np.void], shape: tuple[()] = (), default: npt.ArrayLike = ...,
                 group: str = "default") -> None: ...

    @overload
    def __init__(self: PerContainer[Any], name: str, *, dtype: str, shape: tuple[()] = (),
                 default: npt.ArrayLike = ..., group: str = "default") -> None: ...

    @overload
    def __init__(self: PerContainer[npt.NDArray[S]], name: str, *, dtype: type[S] | np.dtype[S],
                 shape: _Shape, default: npt.ArrayLike = ..., group: str = "default") -> None: ...

    @overload
    def __init__(self: PerContainer[npt.NDArray[Any]], name: str, *,
                 dtype: type[bool | int | float] | str, shape: _Shape,
                 default: npt.ArrayLike = ..., group: str = "default") -> None: ...

    def __init__(self, name: str, *, default: Any = _UNSET,
                 factory: Callable[[], T] | None = None, group: str = "default",
                 on_exit: Callable[[T], object] | None = None, dtype: Any = None,
                 shape: int | tuple[int, ...] = ()) -> None:
        if self._record is not _UNBOUND:  # rebinding would move the slot under running code
            raise TypeError("PerContainer.__init__ may be called once only; "
                            "declare another variable with PerContainer(name, ...)")
        has_default = default is not _UNSET
        typed = dtype is not None  # a typed default is copied into each container: any will do
        check_declaration(name, None if typed else default, has_default and not typed, factory,
                          group, on_exit)
        spec = spec_for(name, dtype, shape, default, has_default, factory, on_exit)
        self._bind(_declare(name, group, default, has_default, factory, on_exit, spec))

    __signature__ = _signature_of(__init__)

    def _bind(self, record: _Record) -> None:
        self._record = record
        self._slot = record.slot
        self._column = record.column
        record.variable = weakref.ref(self)

    def _check_bound(self) -> None:
        """Raise TypeError if __init__ never ran (where nothing reads the record)."""
        if self._record is _UNBOUND:
            raise TypeError(not_initialised("PerContainer"))

    @property
    def name(self) -> str:
        """The variable's name (its identity: declaring it again binds to the same slot)."""
        return self._record.name

    @property
    def group(self) -> str:
        """The group that Container(share=...) names to share this variable with a parent."""
        return self._record.group

    @property
    def dtype(self) -> np.dtype[Any] | None:
        """A typed variable's numpy dtype; None for an object variable."""
        self._check_bound()
        return None if self._column is None else self._column.spec.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """A typed variable's shape (() for a scalar, and for an object variable)."""
        self._check_bound()
        return () if self._column is None else self._column.spec.shape

    def __repr__(self) -> str:
        if self._record is _UNBOUND:
            return "<PerContainer not initialised>"
        typed = "" if self._column is None else f" dtype={self._column.spec.describe()}"
        return f"<PerContainer {self._record.name!r} group={self._record.group!r}{typed}>"

    # -- copying and pickling: a variable is an identity, like a module-level function ---------
    def __copy__(self) -> PerContainer[T]:
        self._check_bound()
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> PerContainer[T]:
        self._check_bound()
        return self

    def __reduce__(self) -> tuple[Callable[[str], PerContainer[Any]], tuple[str]]:
        """Pickle by name: loading returns the variable declared under that name."""
        return _variable_named, (self._record.name,)

    # -- reading ----------------------------------------------------------------------------
    def get(self) -> T:
        """Return the current container's value (running the factory once if needed)."""
        frame = _current_frame.get(_HOST_FRAME)
        if frame.__class__ is not _Frame:
            raise foreign_current(frame)
        container = frame.container
        area = container._area
        if container._owners is None and area is not None:  # the common case, inlined
            try:
                return area[self._slot]  # type: ignore[no-any-return]  # the area holds a T
            except KeyError:
                pass
        return self._get_in(container)

    def of(self, container: Container) -> T:
        """Return the value in `container` without entering it."""
        if not isinstance(container, Container):
            raise TypeError(f"of() takes a Container, not {type(container).__name__}")
        return self._get_in(container)

    def _get_in(self, container: Container) -> T:
        owner = _storage(container, self._record.group)
        if self._column is not None:
            return self._typed_get(owner)  # type: ignore[no-any-return]  # T is the dtype's
        area = owner._area
        if area is not None and self._slot in area:
            return area[self._slot]  # type: ignore[no-any-return]  # the area holds T here
        return self._miss(owner)

    def _miss(self, owner: Container) -> T:
        record = self._record
        if owner._area is None:
            raise ContainerClosedError(f"{record.name!r} read in closed {owner!r}")
        if record.factory is not None:
            return self._run_factory(owner)
        if record.has_default:
            return record.default  # type: ignore[no-any-return]  # default is a T
        raise LookupError(
            f"PerContainer {record.name!r} is not set in {owner!r} and has no default; "
            "set() it first, or declare it with default= or factory="
        )

    def _run_factory(self, owner: Container) -> T:
        """Run the factory once for (owner, slot); other flows that race wait and share its
        result, and a flow that would wait for itself (factories reading each other, across
        threads too) gets a ContainerError naming the variables."""
        record = self._record
        key = (owner, self._slot)
        mine = _Pending(record.name)
        making = _making.get()
        while True:
            with _lock:
                area = owner._area
                if area is None:
                    raise ContainerClosedError(f"{record.name!r} read in closed {owner!r}")
                if self._slot in area:
                    return area[self._slot]  # type: ignore[no-any-return]  # a T
                pending = _pending.setdefault(key, mine)
                if pending is mine:
                    break
                _check_wait(pending, mine, making)
            try:
                _wait(pending, mine)
            finally:
                with _lock:
                    for made in making:
                        made.blocked_on = None
        factory = record.factory
        installed: Any = _UNSET
        making_now = (*making, mine)
        token = _making.set(making_now)
        try:
            assert factory is not None
            value = _call_inside(owner, factory)
            with _lock:
                area = owner._area
                if area is not None:
                    installed = area.setdefault(self._slot, value)  # a set() meanwhile wins
        finally:
            try:
                with _lock:
                    if _pending.get(key) is mine:  # (not after a fork() that dropped it)
                        del _pending[key]
                mine.finish()
            finally:
                reset(_making, token, making_now)
        if installed is not value:  # the value never joined the container: hand it back
            on_exit = record.on_exit
            if on_exit is not None:
                on_exit(value)
        if installed is _UNSET:
            raise ContainerClosedError(f"{owner!r} was closed while {record.name!r} was made")
        return installed  # type: ignore[no-any-return]  # the factory makes a T

    # -- typed variables --------------------------------------------------------------------
    def _typed_get(self, owner: Container) -> Any:
        column = self._column
        assert column is not None
        with _lock:  # the row is owner's until teardown, which takes the lock
            self._check_open(owner, "read")
            area = owner._area
            assert area is not None
            if column.spec.kind != VIEW:
                value = column.read(owner._row)
            else:
                value = area.get(self._slot)
                if value is None:  # made once per container, kept in its area like an object
                    value = _rows.view(column, owner._row)
                    if owner._area is area:
                        area[self._slot] = value
            # This thread holds the lock, but a gc pass in it (reentering the lock) may have
            # closed owner meanwhile, and given its row to a new container: a value read from
            # there is not owner's.
            self._check_open(owner, "read")
            return value

    def _check_open(self, owner: Container, what: str) -> None:
        if owner._area is None:
            raise ContainerClosedError(f"{self._record.name!r} {what} in closed {owner!r}")

    def _typed_set(self, value: Any) -> None:
        column = self._column
        assert column is not None
        spec = column.spec
        # Converted first: the user's __index__ runs outside the lock, and only here.
        self._typed_store(spec.convert(value) if spec.kind != VIEW else spec.convert_array(value),
                          "set")

    def _typed_store(self, new: Any, what: str) -> None:
        """Store a converted value in the current container's storage."""
        column = self._column
        assert column is not None
        with _lock:
            owner = _storage(current(), self._record.group)
            self._check_open(owner, what)
            column.write(owner._row, new)

    def _typed_add(self, delta: Any) -> Any:
        column = self._column
        assert column is not None
        spec = column.spec
        if spec.kind != VIEW:
            step = spec.convert_delta(delta) if spec.kind != BOOL else delta
        else:
            step = spec.convert_array(delta) if spec.dtype.names is None else delta
        with _lock:
            owner = _storage(current(), self._record.group)
            self._check_open(owner, "add")
            if spec.kind != VIEW:
                column.write(owner._row, spec.add(column.read(owner._row), step))
                return column.read(owner._row)  # as stored: a float32 sum comes back rounded
            k, index = locate(owner._row)
            column.write(owner._row, spec.add_array(column.chunks[k][index], step))
        return self._typed_get(owner)

    def _typed_column(self, what: str) -> Column:
        if self._column is None:
            raise TypeError(f"{what}() is for typed variables; declare "
                            f"{self._record.name!r} with dtype= to use it")
        return self._column

    # -- writing ----------------------------------------------------------------------------
    # A typed array variable's set() broadcasts any array-like; every other variable's takes
    # its value type.
    @overload
    def set(self: PerContainer[npt.NDArray[S]], value: npt.ArrayLike) -> None: ...

    @overload
    def set(self, value: T) -> None: ...

    def set(self, value: Any) -> None:
        """Set the current container's value."""
        if self._column is not None:
            return self._typed_set(value)
        owner = _storage(current(), self._record.group)
        area = owner._area
        if area is None:
            raise ContainerClosedError(f"{self._record.name!r} set in closed {owner!r}")
        area[self._slot] = value

    @property
    def value(self) -> T:
        """The current container's value (get() / set())."""
        return self.get()

    @value.setter
    def value(self, value: T) -> None:
        self.set(value)

    def add(self, delta: Any = 1) -> T:
        """Add delta to the current container's value and return the new value."""
        if self._column is not None:
            return self._typed_add(delta)  # type: ignore[no-any-return]  # T is the dtype's
        owner = _storage(current(), self._record.group)
        base = self._get_in(owner)  # runs the factory or takes the default outside the lock
        with _lock:
            value = self._area_of(owner).get(self._slot, base)
            if type(value) in _ATOMIC_ADD and type(delta) in _ATOMIC_ADD:
                new = value + delta  # runs no Python code: atomic with the read, as in the core
                self._area_of(owner)[self._slot] = new
                return new  # type: ignore[no-any-return]  # T + delta is a T for numbers
        new = value + delta  # user code (an __add__): never under the lock
        with _lock:
            self._area_of(owner)[self._slot] = new  # raises if the + closed the container
        return new  # type: ignore[no-any-return]  # T + delta is a T for numbers

    def _area_of(self, owner: Container) -> dict[int, Any]:
        area = owner._area
        if area is None:
            raise ContainerClosedError(f"{self._record.name!r} set in closed {owner!r}")
        return area

    def reset(self) -> None:
        """Make the variable unset again in the current container (a typed one: its default)."""
        if self._column is not None:
            default = self._column.spec.default  # converted already: stored as it is
            return self._typed_store(default if self._column.spec.kind == VIEW else default.item(),
                                     "reset")
        owner = _storage(current(), self._record.group)
        area = owner._area
        if area is None:
            raise ContainerClosedError(f"{self._record.name!r} reset in closed {owner!r}")
        area.pop(self._slot, None)

    # -- across containers ------------------------------------------------------------------
    def items(self) -> list[tuple[Container, T]]:
        """Return (container, value) for each live container whose own storage holds a value."""
        self._check_bound()
        if self._column is not None:
            group = self._record.group
            typed = []
            for container in containers():
                if _storage(container, group) is container:
                    try:
                        typed.append((container, self._typed_get(container)))
                    except ContainerClosedError:  # closed since the listing, as above
                        continue
            return typed
        slot = self._slot
        pairs = []
        for container in containers():
            area = container._area
            if area is not None and slot in area:
                pairs.append((container, area[slot]))
        return pairs

    # The reductions' types, from the value type: numbers give Python numbers (a bool sum
    # counts, a mean is a float), typed arrays give arrays (an int sum an object array).
    @overload
    def sum(self: PerContainer[bool] | PerContainer[int]) -> int: ...

    @overload
    def sum(self: PerContainer[float]) -> float: ...

    @overload
    def sum(self: PerContainer[npt.NDArray[S]]) -> npt.NDArray[Any]: ...

    @overload
    def sum(self) -> Any: ...

    def sum(self) -> Any:
        """Return the total of the values over all live containers (0 if none is set)."""
        if self._column is not None:
            return total(self._snapshot(self._column, DATA_ONLY))
        result: Any = 0
        for _, value in self.items():
            result = result + value
        return result

    def values(self) -> npt.NDArray[Any]:
        """Return a typed variable's values, one row per live container storing it."""
        return values(self._snapshot(self._typed_column("values"), WITH_IDENT))

    @overload
    def min(self: PerContainer[npt.NDArray[S]]) -> npt.NDArray[S]: ...

    @overload
    def min(self) -> T: ...

    def min(self) -> Any:
        """Return the least value over the live containers storing the typed variable."""
        return minimum(self._snapshot(self._typed_column("min"), WITH_LIVE))

    @overload
    def max(self: PerContainer[npt.NDArray[S]]) -> npt.NDArray[S]: ...

    @overload
    def max(self) -> T: ...

    def max(self) -> Any:
        """Return the greatest value over the live containers storing the typed variable."""
        return maximum(self._snapshot(self._typed_column("max"), WITH_LIVE))

    @overload
    def mean(self: PerContainer[bool] | PerContainer[int] | PerContainer[float]) -> float: ...

    @overload
    def mean(self: PerContainer[npt.NDArray[S]]) -> npt.NDArray[np.float64]: ...

    @overload
    def mean(self) -> Any: ...

    def mean(self) -> Any:
        """Return the mean over the live containers storing the typed variable (a float)."""
        return mean(self._snapshot(self._typed_column("mean"), WITH_LIVE))

    def _snapshot(self, column: Column, masks: int) -> Snapshot:
        """Copy the rows a reduction reads at one instant (no typed write under the lock);
        numpy then reduces the copy while other threads go on."""
        with _lock:
            return _rows.snapshot(column, self._record.group, masks)


def _variable_named(name: str) -> PerContainer[Any]:
    """Return the variable declared as `name` in this process: what a pickled one loads as."""
    with _lock:
        record = _declared(name)
        if record is None:
            raise TypeError(f"cannot load PerContainer {name!r}: {name!r} is not declared in this "
                            "process; import the module that declares it before unpickling")
        var = record.variable() if record.variable is not None else None
        if var is None:  # the last one bound died, an older one lives on: bind another
            var = PerContainer.__new__(PerContainer)
            var._bind(record)
        return var


# As for PerContainer.__init__: the forms a checker tells apart, each with its value type.
# Without on_exit=, the decorator returned is generic, so the factory's return type decides.
@overload
def per_container(fn: Callable[[], T], /) -> PerContainer[T]: ...


@overload
def per_container(*, name: str | None = None, group: str = "default",
                  on_exit: None = None) -> _Declarator: ...


@overload
def per_container(
    *, name: str | None = None, group: str = "default", on_exit: Callable[[T], object],
) -> Callable[[Callable[[], T]], PerContainer[T]]: ...


# bool is an int, and shape=() fits the array forms too: the first form that fits is the one.
@overload
def per_container(  # type: ignore[overload-overlap]  # see above
    *, name: str | None = None, group: str = "default", dtype: _BoolDType, shape: tuple[()] = (),
) -> Callable[[Callable[[], bool | np.bool_]], PerContainer[bool]]: ...


@overload
def per_container(  # type: ignore[overload-overlap]  # see above
    *, name: str | None = None, group: str = "default", dtype: _IntDType, shape: tuple[()] = (),
) -> Callable[[Callable[[], SupportsIndex]], PerContainer[int]]: ...


@overload
def per_container(  # type: ignore[overload-overlap]  # see above
    *, name: str | None = None, group: str = "default", dtype: _FloatDType,
    shape: tuple[()] = (),
) -> Callable[[Callable[[], SupportsFloat | SupportsIndex]], PerContainer[float]]: ...


@overload
def per_container(
    *, name: str | None = None, group: str = "default", dtype: np.dtype[np.void],
    shape: tuple[()] = (),
) -> Callable[[Callable[[], npt.ArrayLike]], PerContainer[npt.NDArray[np.void]]]: ...


@overload
def per_container(
    *, name: str | None = None, group: str = "default", dtype: str, shape: tuple[()] = (),
) -> Callable[[Callable[[], npt.ArrayLike]], PerContainer[Any]]: ...


@overload
def per_container(
    *, name: str | None = None, group: str = "default", dtype: type[S] | np.dtype[S],
    shape: _Shape,
) -> Callable[[Callable[[], npt.ArrayLike]], PerContainer[npt.NDArray[S]]]: ...


@overload
def per_container(
    *, name: str | None = None, group: str = "default", dtype: type[bool | int | float] | str,
    shape: _Shape,
) -> Callable[[Callable[[], npt.ArrayLike]], PerContainer[npt.NDArray[Any]]]: ...


def per_container(
    fn: Callable[[], T] | None = None, /, *, name: str | None = None, group: str = "default",
    on_exit: Callable[[T], object] | None = None, dtype: Any = None,
    shape: int | tuple[int, ...] = (),
) -> PerContainer[T] | Callable[[Callable[[], T]], PerContainer[T]]:
    """Declare a per-container variable whose value the decorated function makes (with dtype=,
    a typed variable whose default the function returns, called once, now)."""
    # Every argument goes on to PerContainer, whose checks (not the overloads) judge a mix.
    declare_variable = cast("Callable[..., PerContainer[Any]]", PerContainer)

    def declare(factory: Callable[[], T]) -> PerContainer[T]:
        var_name = decorated_name(factory, name)
        if dtype is not None:
            return declare_variable(var_name, default=factory(), group=group, on_exit=on_exit,
                                    dtype=dtype, shape=shape)
        return declare_variable(var_name, factory=factory, group=group, on_exit=on_exit,
                                shape=shape)

    return declare if fn is None else declare(fn)


def wrap(fn: Callable[P, R]) -> Callable[P, R]:
    """Return a callable that runs fn in the container current now (for threads and callbacks)."""
    check_callable(fn, "wrap()")
    if fn is None:
        raise TypeError("wrap() takes a callable, not None")
    container = current()

    @functools.wraps(fn)
    def in_container(*args: P.args, **kwargs: P.kwargs) -> R:
        return container.run(fn, *args, **kwargs)

    return in_container
