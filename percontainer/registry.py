"""TenantRegistry: one container per tenant key, made on demand, evicted when idle.

A request uses its tenant through `with registry.use(key) as container:` (or enter/leave),
which finds or makes the container and enters it; eviction passes over a container in use
(a request inside, or pinned).
Eviction closes the container, so its exit hooks run; a later request for the same key gets a
fresh container. All of it is thread-safe and safe under asyncio: the lock is held only for
the registry's own bookkeeping, never while a container is entered or closed.

The lock is reentrant, as a gc pass may start inside a locked section (at an allocation; from
3.12 at nearly any call) and run a finalizer or gc callback that uses the registry in the same
thread. Such a call runs to its end there, so every locked section re-checks what it read
before a call: pin() pins a tenant, then checks it is still listed; eviction unlists a
tenant, then checks it is the one it chose and still unused.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ._core import ENABLED, Container, current, enter_from, leave
from ._errors import ContainerClosedError, ContainerError, report_unraisable

# Every registry, so that a fork()'s child gets fresh locks: a thread of the parent may have
# held one at fork(), and only the forking thread lives on in the child.
_registries: weakref.WeakSet[TenantRegistry] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    for registry in list(_registries):
        registry._lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)

__all__ = ["TenantRegistry", "UnknownTenantError"]


class UnknownTenantError(LookupError):
    """The key names no tenant, and the registry does not create tenants on demand."""


_NEVER = float("inf")


class _Entry:
    __slots__ = ("container", "key", "last_used")

    def __init__(self, key: str, container: Container, now: float) -> None:
        self.key = key
        self.container = container
        self.last_used = now


class TenantRegistry:
    """Find or create one container per tenant key, thread-safely.

    auto_create: make a container for an unknown key (else UnknownTenantError).
    max_tenants: keep at most this many; the least recently used idle tenant is closed to
        make room (tenants with a request in flight are never evicted, so the count may run
        over while all are busy).
    idle_timeout: close tenants unused for this many seconds (checked on each use and by
        evict_idle()).
    parent, share: passed to Container() for each tenant; parent defaults to the container
        current when the registry is made.
    """

    def __init__(self, *, auto_create: bool = True, max_tenants: int | None = None,
                 idle_timeout: float | None = None, parent: Container | None = None,
                 share: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_tenants is not None and (not isinstance(max_tenants, int) or max_tenants < 1):
            raise ValueError(f"max_tenants must be a positive int or None, not {max_tenants!r}")
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be a positive number or None, not {idle_timeout!r}")
        self.auto_create = auto_create
        self._max_tenants = max_tenants
        self._idle_timeout = idle_timeout
        self._parent = parent if parent is not None else current()
        self._share = share
        self._clock = clock
        self._lock = threading.RLock()  # reentrant, for finalizers: see the module docstring
        _registries.add(self)  # its lock is made anew in a fork()'s child
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._containers: dict[str, Container] = {}  # without limits, the same, for enter_from()
        self._draining: set[Container] = set()  # evicted while pinned: closed by the last unpin
        self._closed = False
        self._evicts = max_tenants is not None or idle_timeout is not None
        self._latest: _Entry | None = None  # the entry last moved to the end
        self._limit = max_tenants if max_tenants is not None else sys.maxsize
        # No listed tenant goes idle before this time: a use looks for idle ones only from then.
        self._idle_due = -_NEVER if idle_timeout is not None else _NEVER

    @property
    def max_tenants(self) -> int | None:
        """The most tenants kept (idle ones beyond it are closed), or None."""
        return self._max_tenants

    @property
    def idle_timeout(self) -> float | None:
        """Seconds after which an idle tenant is closed, or None."""
        return self._idle_timeout

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[str]:
        """Return the keys of the live tenants, least recently used first."""
        with self._lock:
            return list(self._entries)

    def get(self, key: str) -> Container:
        """Return the tenant's container, creating it if allowed (it is not pinned)."""
        container = self.pin(key)
        self.unpin(key, container)
        return container

    def create(self, key: str) -> Container:
        """Make the tenant's container now (even when auto_create is off); return it."""
        container = self.pin(key, create=True)
        self.unpin(key, container)
        return container

    @contextmanager
    def use(self, key: str) -> Iterator[Container]:
        """Find or make the tenant, pin it against eviction, and run the block inside it."""
        container = self.pin(key)
        try:
            # A pinned tenant is never closed by eviction (evict() waits for its last user),
            # so entering can only fail once close() has run.
            with container:
                yield container
        finally:
            self.unpin(key, container)

    def enter(self, key: str) -> Container:
        """Find or make the tenant and enter its container, which is current in this thread or
        task until leave(key, container): use() without a with-block, for the middleware's hot
        path. A container someone is inside is never evicted; evict(key) closes it at once and
        its teardown waits for them (nothing may re-enter it: pin() for that)."""
        if not ENABLED:  # entering counts no user: the pin keeps the tenant until leave()
            container = self.pin(key)
            try:
                container.__enter__()
            except BaseException:
                self.unpin(key, container)
                raise
            return container
        if not self._evicts:  # no order to keep: one C call finds and enters, no lock
            found = enter_from(self._containers, key)
            if found is not None:
                return found
        container = self.pin(key)  # the one lock: found, pinned, its use noted, evictions chosen
        try:
            container.__enter__()  # pinned: only registry.close() can have closed it
        finally:
            # Being inside keeps it from eviction and teardown from here on, and pin() noted
            # this use: the pin goes without a second lock.
            container.unpin()
            if self._draining:
                self._drain(container)
        return container

    def leave(self, key: str, container: Container) -> None:
        """Leave the container enter(key) entered, in the same thread or task."""
        leave(container)
        if not ENABLED:
            self.unpin(key, container)
        elif self._evicts:
            self._touch(key, container)

    def pin(self, key: str, *, create: bool | None = None) -> Container:
        """Find or make the tenant and pin its container (Container.pin: a container in use is
        never evicted, and one closed meanwhile is torn down by its last user).

        Every pin() needs its unpin(key, container). create: make the tenant if unknown (default: the
        registry's auto_create); raises UnknownTenantError otherwise."""
        if not isinstance(key, str):
            raise TypeError(f"a tenant key is a str, not {type(key).__name__}")
        if not self._evicts:  # no order to keep: dict reads and a pin, each atomic, no lock
            entry = self._entries.get(key)
            if entry is not None:
                try:
                    entry.container.pin()
                except ContainerClosedError:
                    pass  # evicted and closed meanwhile: the locked path finds what is current
                else:
                    if self._entries.get(key) is entry:  # not evicted between read and pin
                        return entry.container
                    self.unpin(key, entry.container)
            return self._pin(key, create)
        # A known tenant: found, pinned, its use noted and evictions chosen under one lock.
        # Each call here may run a finalizer that evicts this very tenant (a gc pass): pinned
        # first, it is then either still listed or left to our unpin; _pin() sorts that out.
        evicted = stale = None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                container = entry.container
                try:
                    container.pin()  # live: a container leaves _entries before it closes
                except ContainerClosedError:  # evicted by a finalizer since the read
                    entry = None
                else:
                    if self._entries.get(key) is not entry:  # ... or since the pin
                        stale, entry = container, None
                    else:
                        now = self._note_use(entry)
                        if len(self._entries) <= self._limit and now < self._idle_due:
                            return container
                        evicted = self._choose_evictions(now)
        if entry is None:  # unknown, or evicted by a finalizer: made or found anew unlocked
            if stale is not None:
                self._release(stale)
            return self._pin(key, create)
        if evicted:
            # Evicted on behalf of this request, not by it: a failing exit hook is reported,
            # and neither stops the other evictions nor fails the request.
            self._close_evicted(evicted, raise_first=False)
        return container

    def _pin(self, key: str, create: bool | None) -> Container:
        """pin() for a new tenant, one evicted meanwhile, or a registry without limits."""
        made: Container | None = None  # a new tenant's container, made outside the lock
        try:
            while True:
                found = stale = None
                evicted: list[Container] = []
                with self._lock:
                    if self._closed:
                        raise ContainerError("the tenant registry is closed")
                    entry = self._entries.get(key)
                    if entry is None and made is not None:
                        listed = _Entry(key, made, self._clock())
                        self._latest = None  # the new entry goes last: nobody else is
                        entry = self._entries.setdefault(key, listed)
                        if entry.container is made:
                            made = None
                    if entry is not None:
                        found = entry.container
                        if not self._evicts:
                            self._containers[key] = found  # evict() unlists it from here on
                        try:
                            found.pin()
                        except ContainerClosedError:  # evicted by a finalizer since the read
                            continue
                        if self._entries.get(key) is not entry:  # ... or since the pin
                            stale = found
                        elif self._evicts:  # order and times matter only to eviction
                            now = self._note_use(entry)
                            if len(self._entries) > self._limit or now >= self._idle_due:
                                evicted = self._choose_evictions(now)
                if evicted:
                    self._close_evicted(evicted, raise_first=False)
                if stale is not None:
                    self._release(stale)
                    continue
                if found is not None:
                    return found
                if not (self.auto_create if create is None else create):
                    raise UnknownTenantError(f"unknown tenant {key!r}")
                made = self._make(key)
        finally:
            if made is not None:  # never listed (the registry closed, or another made it first)
                made.close()

    def unpin(self, key: str, container: Container) -> None:
        """Undo the pin() that returned `container` for `key`."""
        if self._evicts:
            self._touch(key, container)
        self._release(container)

    def _release(self, container: Container) -> None:
        container.unpin()
        if self._draining:
            self._drain(container)

    def _touch(self, key: str, container: Container) -> None:
        """Note the end of a use: the tenants are kept in order of last use, start or end."""
        latest = self._latest
        if latest is not None and latest.container is container:
            # Used last already (no other use noted since this one began): only its time
            # moves, which needs no lock (a use noted meanwhile is as recent, to a microsecond).
            if self._idle_timeout is not None:
                latest.last_used = self._clock()
            return
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.container is container:
                self._note_use(entry)

    def _note_use(self, entry: _Entry) -> float:
        """Make entry the most recently used (locked); return the time (0.0 if untimed)."""
        self._latest = entry  # first: a finalizer the move's call runs may move another after
        try:
            self._entries.move_to_end(entry.key)
        except KeyError:  # unlisted by a finalizer (run by a call since the caller's check)
            pass
        if self._idle_timeout is None:  # the order is all max_tenants needs
            return 0.0
        entry.last_used = now = self._clock()
        return now

    def _drain(self, container: Container) -> None:
        """Close a tenant evicted while pinned, once its last pin is gone (here, or by the
        unpin() racing this check: the lock lets exactly one of them close it)."""
        if container.pinned:
            return
        with self._lock:
            if container not in self._draining:
                return
            self._draining.discard(container)
        _close_all([container], raise_first=False)

    def _make(self, key: str) -> Container:
        return Container(key, parent=self._parent, share=self._share)

    def _choose_evictions(self, now: float) -> list[Container]:
        """Unlist the tenants to close (locked); the caller closes them after unlocking, with
        _close_evicted().

        The entries are in order of last use (pin() and unpin() both move a tenant to the
        end), so the idle check stops at the first tenant used within idle_timeout, and the
        max_tenants one once it has found enough idle ones: a request costs O(1) here, not a
        walk over every tenant. A finalizer run here may use the registry: the walk starts
        again over a copy if the order changed under it, and a tenant is unlisted only if it
        is still the one chosen and still unused."""
        try:
            chosen = self._chosen(self._entries.values(), now)
        except RuntimeError:  # "OrderedDict mutated during iteration": by a finalizer
            chosen = self._chosen(list(self._entries.values()), now)
        evicted: list[Container] = []
        for entry in chosen:
            unlisted = self._entries.pop(entry.key, None)
            if unlisted is None:  # evicted by a finalizer meanwhile
                continue
            if unlisted is entry and not entry.container.in_use:
                evicted.append(entry.container)
                continue
            # Made or used by a finalizer since the walk: kept, as the latest used, unless a
            # finalizer made the tenant afresh since the pop (this one then goes, as evict()).
            self._latest = None  # setdefault() lists it last
            if self._entries.setdefault(unlisted.key, unlisted) is unlisted:
                self._latest = unlisted
            else:
                self._retire(unlisted.container, evicted)
        return evicted

    def _chosen(self, entries: Iterable[_Entry], now: float) -> list[_Entry]:
        """Return the idle entries to evict, least recently used first (locked)."""
        chosen: list[_Entry] = []
        timeout = self._idle_timeout
        if timeout is not None and now >= self._idle_due:
            due = now + timeout  # for tenants made from now on
            for entry in entries:
                if now - entry.last_used < timeout:
                    due = min(due, entry.last_used + timeout)
                    break
                if entry.container.in_use:
                    # Its user may leave it unnoted (a with-block on get()'s container).
                    due = now
                else:
                    chosen.append(entry)
            self._idle_due = due
        excess = len(self._entries) - len(chosen) - self._limit
        if excess > 0:
            idle = set(chosen)
            for entry in entries:
                if excess == 0:
                    break
                if entry not in idle and not entry.container.in_use:
                    chosen.append(entry)
                    excess -= 1
        return chosen

    def _retire(self, container: Container, evicted: list[Container]) -> None:
        """Queue an unlisted tenant for _close_evicted() (locked): a pinned one is closed by
        its last unpin, one that requests are inside at once, its teardown waiting for them."""
        if container.pinned:
            self._draining.add(container)
        evicted.append(container)

    def _close_evicted(self, evicted: list[Container], *, raise_first: bool) -> None:
        """Close what _choose_evictions() and _retire() unlisted (unlocked)."""
        closing = []
        for container in evicted:
            if container in self._draining:
                self._drain(container)  # unpinned since: nobody else will close it
            else:
                closing.append(container)
        _close_all(closing, raise_first=raise_first)

    def evict_idle(self) -> int:
        """Close the tenants idle past idle_timeout (or over max_tenants); return how many.

        Every one is closed even if an exit hook fails; then the first failure is raised."""
        with self._lock:
            if self._idle_timeout is not None:
                self._idle_due = -_NEVER  # look now, whatever the last look found
            evicted = self._choose_evictions(self._clock())
        self._close_evicted(evicted, raise_first=True)
        return len(evicted)

    def evict(self, key: str) -> bool:
        """Forget one tenant: the next request for key gets a fresh container. The old one is
        closed now if idle, else when its last request in flight ends (a streaming response
        included). Return whether the key was known."""
        evicted: list[Container] = []
        with self._lock:
            self._containers.pop(key, None)  # first: enter_from() then finds no unlisted one
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._retire(entry.container, evicted)  # pinned: a streaming body may still enter it
        self._close_evicted(evicted, raise_first=True)
        return True

    def close(self) -> None:
        """Close every tenant now (requests still inside finish first, as close() defers
        teardown for them); the registry refuses further use. Idempotent."""
        with self._lock:
            self._closed = True  # from here on, nothing is listed (a finalizer run below too)
            containers = [entry.container for entry in list(self._entries.values())]
            self._containers.clear()
            self._entries.clear()
            containers += self._draining
            self._draining.clear()
        _close_all(containers, raise_first=True)

    def __enter__(self) -> TenantRegistry:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _close_all(containers: list[Container], *, raise_first: bool) -> None:
    """Close every container; then raise the first error, or report each (unraisablehook)."""
    errors: list[BaseException] = []
    for container in containers:
        try:
            container.close()
        except Exception as error:  # noqa: BLE001  # the others must close all the same
            errors.append(error)
    if errors and raise_first:
        raise errors[0]
    for failure in errors:
        report_unraisable("Exception closing an evicted tenant", failure, None)
