"""Carrying the current container into executor threads.

`ThreadPoolExecutor.submit` and `loop.run_in_executor` run the function in a worker thread
that is in the host: they do not carry the caller's container (nor its contextvars).
`ContainerThreadPoolExecutor` captures the container current at submit() time and runs the
function inside it; the worker leaves it when the function returns, so a long-lived worker
pins nothing. For one call, `wrap(fn)` does the same with any executor:
`loop.run_in_executor(pool, wrap(fn))`. `asyncio.to_thread` already carries it (it copies the
context), and so does `Container.run` in whatever thread calls it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from ._core import Container, current

__all__ = ["ContainerThreadPoolExecutor"]

P = ParamSpec("P")
R = TypeVar("R")


def _run_in(container: Container, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    with container:
        return fn(*args, **kwargs)


class ContainerThreadPoolExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose calls run in the container current when they were submitted."""

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        return super().submit(_run_in, current(), fn, *args, **kwargs)
