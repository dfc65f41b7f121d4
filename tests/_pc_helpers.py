"""Helpers shared by the test modules (not a test module itself)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Box:
    """A value object that can be weakly referenced (ints and strs cannot)."""

    __slots__ = ("__weakref__", "payload")

    def __init__(self, payload: Any = None) -> None:
        self.payload = payload

    def __repr__(self) -> str:
        return f"Box({self.payload!r})"


def run_threads(targets: list[Callable[[], Any]], timeout: float = 60.0) -> list[Any]:
    """Run each target in its own thread; return their results, re-raise the first error."""
    results: list[Any] = [None] * len(targets)
    errors: list[BaseException] = []

    def runner(index: int, target: Callable[[], Any]) -> None:
        try:
            results[index] = target()
        except BaseException as error:  # noqa: BLE001  # re-raised in the main thread
            errors.append(error)

    threads = [threading.Thread(target=runner, args=(i, t), daemon=True)  # a hang fails, not blocks
               for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


@contextmanager
def switch_often(interval: float = 1e-5) -> Iterator[None]:
    """Make the GIL switch threads very often, to shake out races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Return True once condition() holds, False if it still does not after `timeout` seconds:
    for what runs soon on another thread, not at once (a discarded entry's teardown, on the
    teardown worker)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True
