"""ContextVar.reset() made safe against a gc pass on CPython 3.10 and 3.11.

A reset to no value (the token's set() found none) clears the var's cache first, then builds
the context's new mapping, which allocates, and a gc pass there may run code that reads the
var (a finalizer, a gc callback): that caches, borrowed, the value being removed. The mapping
that held it is then dropped, and the cache still names it for this thread, so the next get()
returns whatever that memory became. Since 3.12 the gc runs only between bytecodes, never
inside reset(). (Found by tests/test_fuzz_threads.py; the upstream relative of
python/cpython#148891.)

So the caller keeps the value it set alive across the reset, and after a reset to no value
every var's cache is made to miss for this thread: entering a context bumps the thread's
context version, which each cache entry is checked against. A read by a gc pass inside the
reset sees the value just being removed, as if it had run a moment earlier.
"""

from __future__ import annotations

import sys
from contextvars import Context, ContextVar, Token
from typing import Any, TypeVar

__all__ = ["reset"]

T = TypeVar("T")

_MISSING = Token.MISSING
_BEFORE_3_12 = sys.version_info < (3, 12)


def _nothing() -> None:
    pass


def reset(var: ContextVar[T], token: Token[T], value_set: Any) -> None:
    """var.reset(token); value_set is what the token's set() stored, held by the caller until
    this returns, so that a cache naming it never outlives it."""
    var.reset(token)
    if _BEFORE_3_12 and token.old_value is _MISSING:
        Context().run(_nothing)  # every ContextVar cache of this thread now misses
    del value_set
