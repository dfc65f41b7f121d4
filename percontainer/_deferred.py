"""Work that falls due inside a finalizer, done later on a thread of its own (the kernel's
workqueue): the teardown of a container whose last user was an entry dropped unleft.

A finalizer runs anywhere, a gc pass included, and a gc pass can run inside CPython's
ContextVar.set(); before 3.12 a second set() there (an exit hook runs inside its container)
frees what the first one still walks (python/cpython#148891). Nor may a finalizer wait for a
lock its own thread may hold. So `defer` only appends to a deque and releases a lock, both C
calls, and the worker does the rest at a safe point. (Not CPython's pending calls: they run in
the main thread's next frame, which may be a finalizer's in that very gc pass; nor before a
blocked main thread wakes.)
"""

from __future__ import annotations

import _thread
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from ._errors import report_unraisable

__all__ = ["Deferred"]


class Deferred:
    """Calls queued from finalizers, made in order by a worker thread started on first use."""

    def __init__(self, what: str) -> None:
        self._what = what  # for the error report of a call that raised
        self._due: deque[tuple[Callable[[Any], object], Any]] = deque()
        self._wake = _thread.allocate_lock()  # held while there is nothing to do
        self._wake.acquire()
        self._starting = _thread.allocate_lock()
        self._started = False
        if hasattr(os, "register_at_fork"):  # only the forking thread lives on in a child
            os.register_at_fork(after_in_child=self._after_fork_in_child)

    def defer(self, fn: Callable[[Any], object], arg: Any) -> None:
        """Queue fn(arg) for the worker. Safe in a finalizer: it runs no user code, sets no
        ContextVar and waits on no lock."""
        self._due.append((fn, arg))
        if not self._started:
            self._start()
        try:
            self._wake.release()
        except RuntimeError:  # already released: the worker has yet to take what is due
            pass

    def _start(self) -> None:
        # Not a wait: a thread already starting it (this one too, from a gc pass that the
        # start's allocation ran) will have it running.
        if not self._starting.acquire(False):
            return
        try:
            if not self._started:
                _thread.start_new_thread(self._work, ())
                self._started = True
        except BaseException as error:  # noqa: BLE001  # a finalizer has no caller
            # The calls stay queued: the next defer() tries again.
            report_unraisable(f"Exception starting the worker for {self._what}", error, self)
        finally:
            self._starting.release()

    def pending(self) -> int:
        """How many calls are queued and not started yet."""
        return len(self._due)

    def _work(self) -> None:
        try:
            while True:
                self._wake.acquire()  # blocks until a defer() releases it
                while self._due:
                    fn, arg = self._due.popleft()
                    try:
                        fn(arg)
                    except BaseException as error:  # noqa: BLE001  # this thread has no caller
                        report_unraisable(f"Exception in {self._what}", error, arg)
                    del fn, arg  # a value freed here may defer more: not while holding it
        finally:  # an unraisablehook that raised ends this worker: the next defer() starts one
            self._started = False

    def _after_fork_in_child(self) -> None:
        self._wake = _thread.allocate_lock()
        self._wake.acquire()
        self._starting = _thread.allocate_lock()
        self._started = False  # the worker did not survive the fork
        if self._due:  # what was due in the parent is due here too
            self._start()
            self._wake.release()
