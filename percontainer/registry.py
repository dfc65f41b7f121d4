"""TenantRegistry: one container per tenant key, made on demand, evicted when idle.

A request uses its tenant through `with registry.use(key) as container:` (or enter/leave),
which finds or makes the container and enters it; eviction passes over a container in use
(a request inside, or pinned).
Eviction closes the container, so its exit hooks run; a later request for the same key gets a
fresh container. All of it is thread-safe and safe under asyncio (the lock is never held
while user code runs).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._core import ENABLED, Container, current, enter_from, leave
from ._errors import ContainerClosedError, ContainerError, report_unraisable

# Every registry, so that a fork()'s child gets fresh locks: a thread of the parent may have
# held one at fork(), and only the forking thread lives on in the child.
_registries: weakref.WeakSet[TenantRegistry] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    for registry in list(_registries):
        registry._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)

__all__ = ["TenantRegistry", "UnknownTenantError"]


class UnknownTenantError(LookupError):
    """The key names no tenant, and the registry does not create tenants on demand."""


class _Entry:
    __slots__ = ("container", "last_used")

    def __init__(self, container: Container, now: float) -> None:
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
        self._lock = threading.Lock()
        _registries.add(self)  # its lock is made anew in a fork()'s child
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._containers: dict[str, Container] = {}  # the same tenants, for enter_from()
        self._draining: set[Container] = set()  # evicted while pinned: closed by the last unpin
        self._closed = False
        self._evicts = max_tenants is not None or idle_timeout is not None

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
        container = self.pin(key)
        try:
            container.__enter__()  # pinned: only registry.close() can have closed it
        finally:
            self.unpin(key, container)  # being inside keeps it from teardown from here on
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
        evicted: list[Container] = []
        try:
            with self._lock:
                if self._closed:
                    raise ContainerError("the tenant registry is closed")
                entry = self._entries.get(key)
                if entry is None:
                    if not (self.auto_create if create is None else create):
                        raise UnknownTenantError(f"unknown tenant {key!r}")
                    entry = _Entry(self._make(key), 0.0)
                    self._entries[key] = entry
                    self._containers[key] = entry.container
                entry.container.pin()  # live: a container leaves _entries before it closes
                if self._evicts:  # order and times matter only to eviction
                    entry.last_used = now = self._clock()
                    self._entries.move_to_end(key)
                    evicted = self._choose_evictions(now)
                return entry.container
        finally:
            # Evicted on behalf of this request, not by it: a failing exit hook is reported,
            # and neither stops the other evictions nor fails the request.
            if evicted:
                _close_all(evicted, raise_first=False)

    def unpin(self, key: str, container: Container) -> None:
        """Undo the pin() that returned `container` for `key`."""
        if self._evicts:
            self._touch(key, container)
        container.unpin()
        if self._draining:
            self._drain(container)

    def _touch(self, key: str, container: Container) -> None:
        """Note the end of a use: the tenants are kept in order of last use, start or end."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.container is container:
                entry.last_used = self._clock()
                self._entries.move_to_end(key)

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
        """Unlink the tenants to close (locked); the caller closes them after unlocking.

        The entries are in order of last use (pin() and unpin() both move a tenant to the
        end), so the idle check stops at the first tenant used within idle_timeout: a
        request costs O(1) here, not a walk over every tenant."""
        chosen: list[str] = []
        if self.idle_timeout is not None:
            for key, entry in self._entries.items():
                if now - entry.last_used < self.idle_timeout:
                    break
                if not entry.container.in_use:
                    chosen.append(key)
        if self.max_tenants is not None:
            excess = len(self._entries) - len(chosen) - self.max_tenants
            if excess > 0:
                for key, entry in self._entries.items():
                    if excess == 0:
                        break
                    if not entry.container.in_use and key not in chosen:
                        chosen.append(key)
                        excess -= 1
        for key in chosen:
            del self._containers[key]
        return [self._entries.pop(key).container for key in chosen]

    def evict_idle(self) -> int:
        """Close the tenants idle past idle_timeout (or over max_tenants); return how many.

        Every one is closed even if an exit hook fails; then the first failure is raised."""
        with self._lock:
            evicted = self._choose_evictions(self._clock())
        _close_all(evicted, raise_first=True)
        return len(evicted)

    def evict(self, key: str) -> bool:
        """Forget one tenant: the next request for key gets a fresh container. The old one is
        closed now if idle, else when its last request in flight ends (a streaming response
        included). Return whether the key was known."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            del self._containers[key]
            pinned = entry.container.pinned
            if pinned:  # closed by its last unpin(): a streaming body may still enter it
                self._draining.add(entry.container)
        if pinned:
            self._drain(entry.container)  # unpinned since the check: nobody else will close it
        else:
            entry.container.close()
        return True

    def close(self) -> None:
        """Close every tenant now (requests still inside finish first, as close() defers
        teardown for them); the registry refuses further use. Idempotent."""
        with self._lock:
            self._closed = True
            containers = [entry.container for entry in self._entries.values()]
            containers += self._draining
            self._entries.clear()
            self._containers.clear()
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
