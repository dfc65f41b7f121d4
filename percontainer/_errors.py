"""The exceptions both cores raise (one set of classes, so `except` works with either twin)."""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["ContainerError", "ContainerClosedError", "foreign_current", "report_unraisable"]


class ContainerError(RuntimeError):
    """A container was used in a way its life cycle does not allow."""


class ContainerClosedError(ContainerError):
    """The container was closed: it can no longer be entered, read or written."""


class _Unraisable:
    """The fields sys.unraisablehook reads."""

    def __init__(self, message: str, error: BaseException, obj: object) -> None:
        self.exc_type: type[BaseException] = type(error)
        self.exc_value: BaseException | None = error
        self.exc_traceback: TracebackType | None = error.__traceback__
        self.err_msg: str | None = message
        self.object: object = obj


def report_unraisable(message: str, error: BaseException, obj: object) -> None:
    """Hand an error that has no caller to raise it to (a deferred exit hook) to sys.unraisablehook."""
    sys.unraisablehook(_Unraisable(message, error, obj))


def foreign_current(value: object) -> ContainerError:
    """Return the error for a current-container ContextVar that holds what percontainer never
    puts there (a third party called set() on it)."""
    return ContainerError(
        f"the current-container ContextVar holds {value!r}, set by code outside percontainer; "
        "only percontainer may set it (enter containers with `with`, and reset the token of "
        "whatever set it)"
    )
