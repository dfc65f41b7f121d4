"""The exceptions both cores raise (one set of classes, so `except` works with either twin)."""

from __future__ import annotations

__all__ = ["ContainerError", "ContainerClosedError"]


class ContainerError(RuntimeError):
    """A container was used in a way its life cycle does not allow."""


class ContainerClosedError(ContainerError):
    """The container was closed: it can no longer be entered, read or written."""
