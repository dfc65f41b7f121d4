"""What both cores need to tell flows of execution apart while a factory runs.

A factory call is owned by the flow that runs it: its own context, not its thread, since the
greenlets of gevent (without monkey-patching) are flows that share one thread. A reader that
finds the factory running in another flow waits for it, on the owner's threading.Event when
the owner has a thread of its own; when the owner is another greenlet of the reader's own
thread, blocking the thread would stop the owner too, so the reader waits through gevent.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ._errors import ContainerError

__all__ = ["current_greenlet", "cycle_error", "green_event"]


def current_greenlet() -> object | None:
    """Return the running greenlet, or None if no greenlet was ever imported (no flow of this
    thread can then be another greenlet)."""
    greenlet = sys.modules.get("greenlet")
    return None if greenlet is None else greenlet.getcurrent()


def green_event(name: str) -> Any:
    """Return a gevent Event for a reader to wait on the factory of `name`, which another
    greenlet of the reader's thread runs."""
    if "gevent" not in sys.modules:
        raise ContainerError(
            f"the factory of {name!r} is running in another greenlet of this thread, which "
            "cannot go on while this one blocks: wait for it with gevent, or read "
            f"{name!r} in the greenlet that makes it")
    # Imported by name: gevent is no dependency, only in use where a greenlet got here.
    return importlib.import_module("gevent.event").Event()


def cycle_error(names: list[str]) -> ContainerError:
    """Return the error for factories that read each other: names[i]'s factory reads
    names[i + 1], and the last name is the first."""
    if len(names) == 2:
        return ContainerError(f"the factory of {names[0]!r} reads {names[0]!r} itself")
    chain = " -> ".join(repr(name) for name in names)
    return ContainerError(
        f"factories read each other in a cycle: {chain} (each factory reads the next); "
        "make one of them without reading the others")
