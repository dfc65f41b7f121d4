"""Argument checks shared by both cores: off the hot path, one message for each mistake."""

from __future__ import annotations

import array
from collections import deque
from collections.abc import Callable, Iterable, Set
from typing import Any

__all__ = ["check_callable", "check_declaration", "check_name", "check_share", "decorated_name",
           "not_copyable", "not_initialised"]

#: Defaults that would be one object shared by every tenant: the classic cross-tenant leak.
#: Any unhashable default is refused too (a numpy array, a tuple holding a list...); these are
#: named so that the check needs no hash() for them, and their types make empty ones.
_MUTABLE_DEFAULTS = (list, dict, set, bytearray, deque, array.array)
_EMPTY_BY_CALL = (list, dict, set, bytearray, deque)  # factory=kind makes an empty one


def check_name(name: object, what: str) -> str:
    """Return `name` if it is a non-empty str, else raise naming `what`."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    return name


def check_callable(fn: object, what: str) -> None:
    """Raise TypeError unless `fn` is None or callable."""
    if fn is not None and not callable(fn):
        raise TypeError(f"{what} must be callable or None, not {type(fn).__name__}")


def check_declaration(
    name: object, default: object, has_default: bool, factory: object, group: object, on_exit: object
) -> None:
    """Validate the arguments of PerContainer(); raise with the fix in the message."""
    check_name(name, "PerContainer name")
    check_name(group, "group")
    check_callable(factory, "factory")
    check_callable(on_exit, "on_exit")
    if has_default and factory is not None:
        raise TypeError(f"PerContainer {name!r}: pass default= or factory=, not both")
    if has_default and _mutable(default):
        kind = type(default).__name__
        if isinstance(default, _EMPTY_BY_CALL):
            fix = f"factory={kind} (or a function returning a fresh value)"
        else:
            fix = "factory= a function returning a fresh one"
        raise TypeError(
            f"PerContainer {name!r}: a mutable default ({kind}) would be one object shared by "
            f"every container; pass {fix} instead"
        )


def _mutable(default: object) -> bool:
    """Return True for a default that tenants could change under each other's feet: a known
    mutable type, or anything unhashable (hashable values are immutable by convention)."""
    if isinstance(default, _MUTABLE_DEFAULTS):
        return True  # without hash(): a subclass may define __hash__
    try:
        hash(default)
    except (TypeError, ValueError):  # ValueError: a writable memoryview
        return True
    return False


def not_initialised(kind: str) -> str:
    """The message for a PerContainer or Container made by __new__ without __init__."""
    return (f"this {kind} was not initialised ({kind}.__new__ without __init__); "
            f"make one with {kind}(...)")


def not_copyable(container: object) -> str:
    """The message for copying or pickling a Container."""
    return (f"{container!r} cannot be copied or pickled: containers are tenants local to this "
            "process; pass an identifier (its name) instead and look the container up where "
            "it is needed")


def check_share(share: Iterable[Any], known_groups: Set[str]) -> frozenset[str]:
    """Return `share` as a frozenset of known group names, or raise."""
    if isinstance(share, str):
        raise TypeError(f"share must be an iterable of group names, not a str; use share=({share!r},)")
    try:
        groups = frozenset(share)
    except TypeError:
        raise TypeError(
            f"share must be an iterable of group names, not {type(share).__name__}"
        ) from None
    if groups <= known_groups:  # the common case: nothing to complain about
        return groups
    for group in groups:
        if not isinstance(group, str):
            raise TypeError(f"share holds {group!r}; group names are str")
    unknown = sorted(groups - known_groups)
    raise ValueError(
        f"unknown group(s) {', '.join(map(repr, unknown))} in share; "
        f"known groups: {', '.join(map(repr, sorted(known_groups)))} "
        "(a group is known once a variable is declared in it)"
    )


def decorated_name(factory: Callable[..., Any], name: str | None) -> str:
    """Return the variable name @per_container gives `factory`: `name`, or module.qualname."""
    check_callable(factory, "@per_container")
    if name is not None:
        return check_name(name, "name")
    module = getattr(factory, "__module__", None)
    qualname = getattr(factory, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(
            f"@per_container cannot name a variable after {factory!r}, which has no "
            "__module__/__qualname__; pass name='package.module.variable'"
        )
    return f"{module}.{qualname}"
