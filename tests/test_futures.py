"""ContainerThreadPoolExecutor, wrap() and asyncio.to_thread: carrying the container to threads.

They use the top-level core; identity assertions are skipped with PERCONTAINER_DISABLE=1.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import percontainer
from percontainer import Container, ContainerClosedError, PerContainer, current, host, wrap
from percontainer.futures import ContainerThreadPoolExecutor

ENABLED = percontainer.ENABLED
enabled_only = pytest.mark.skipif(
    not ENABLED, reason="asserts isolation; PERCONTAINER_DISABLE=1 is set")
WORKERS = 2


pytestmark = pytest.mark.usefixtures("no_leftover_containers")


@pytest.fixture
def ab() -> Iterator[tuple[Container, Container]]:
    a, b = Container("a"), Container("b")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def warm(pool: ThreadPoolExecutor, workers: int = WORKERS) -> list[Container]:
    """Start every worker from the host, and return what each one saw as current."""
    assert current() is host
    barrier = threading.Barrier(workers)

    def hold() -> Container:
        barrier.wait(30)  # all workers busy at once: the pool had to start them all
        return current()

    futures = [pool.submit(hold) for _ in range(workers)]
    return [f.result(30) for f in futures]


def all_workers(pool: ThreadPoolExecutor, fn: Any, workers: int = WORKERS) -> list[Any]:
    """Run fn once on every worker thread at the same time."""
    barrier = threading.Barrier(workers)

    def hold() -> tuple[int, Any]:
        barrier.wait(30)
        return threading.get_ident(), fn()

    results = [f.result(30) for f in [pool.submit(hold) for _ in range(workers)]]
    assert len({ident for ident, _ in results}) == workers
    return [value for _, value in results]


def test_submit_runs_in_the_container_current_at_submit(
        ab: tuple[Container, Container], name: str) -> None:
    a, b = ab
    value = PerContainer(f"{name}.value", default="unset")
    with ContainerThreadPoolExecutor(max_workers=WORKERS) as pool:
        assert warm(pool) == [host, host]
        with a:
            value.set("in a")
            fa = pool.submit(lambda: (current(), value.get()))
        with b:
            fb = pool.submit(lambda: (current(), value.get()))
            fb2 = pool.submit(current)
        fh = pool.submit(current)
        if ENABLED:
            assert fa.result(30) == (a, "in a")
            assert fb.result(30) == (b, "unset")
            assert fb2.result(30) is b
        else:
            assert fa.result(30)[0] is host and fb.result(30)[0] is host
        assert fh.result(30) is host
        # every worker is back in the host afterwards
        assert all_workers(pool, current) == [host, host]


def test_submit_passes_arguments_and_writes_to_the_container(
        ab: tuple[Container, Container], name: str) -> None:
    a, _ = ab
    counter = PerContainer(f"{name}.counter", default=0)
    with ContainerThreadPoolExecutor(max_workers=4) as pool:
        with a:
            futures = [pool.submit(counter.add, delta=i) for i in range(1, 11)]
        results = sorted(f.result(30) for f in futures)
    assert len(results) == 10
    if ENABLED:
        assert counter.of(a) == 55
        assert counter.get() == 0  # the host was not touched
    else:
        assert counter.get() == 55


def test_map_runs_in_the_container(ab: tuple[Container, Container]) -> None:
    a, b = ab
    with ContainerThreadPoolExecutor(max_workers=WORKERS) as pool:
        warm(pool)
        with a:
            in_a = pool.map(lambda i: (i, current()), range(20))
        with b:
            in_b = list(pool.map(lambda i: (i, current()), range(20)))
        in_a_list = list(in_a)  # results collected outside: the container was fixed at map()
        assert [i for i, _ in in_a_list] == list(range(20))
        expected_a, expected_b = (a, b) if ENABLED else (host, host)
        assert all(c is expected_a for _, c in in_a_list)
        assert all(c is expected_b for _, c in in_b)
        assert all_workers(pool, current) == [host, host]


def test_exception_propagates_and_worker_returns_to_host(ab: tuple[Container, Container]) -> None:
    a, _ = ab

    def fail() -> None:
        raise KeyError("boom")

    with ContainerThreadPoolExecutor(max_workers=1) as pool:
        with a:
            future = pool.submit(fail)
        with pytest.raises(KeyError, match="boom"):
            future.result(30)
        assert pool.submit(current).result(30) is host


@enabled_only
def test_nested_submit_from_a_worker(ab: tuple[Container, Container]) -> None:
    a, _ = ab
    with ContainerThreadPoolExecutor(max_workers=2) as inner, \
            ContainerThreadPoolExecutor(max_workers=2) as outer:
        with a:
            future = outer.submit(lambda: inner.submit(current).result(30))
        assert future.result(30) is a


def test_long_lived_worker_pins_nothing(name: str) -> None:
    exited: list[Any] = []
    value = PerContainer(f"{name}.value", default=None, on_exit=exited.append)
    with ContainerThreadPoolExecutor(max_workers=WORKERS) as pool:
        warm(pool)
        c = Container("c")
        try:
            with c:
                futures = [pool.submit(value.set, f"v{i}") for i in range(8)]
            for f in futures:
                f.result(30)
            assert exited == []
            c.close()
            assert c.closed
            if ENABLED:
                # torn down at once: the exit hook ran inside close(), not when a worker moves on
                assert len(exited) == 1 and exited[0].startswith("v")
                with pytest.raises(ContainerClosedError):
                    value.of(c)
        finally:
            c.close()
        assert all_workers(pool, current) == [host, host]  # the pool is alive and in the host


@enabled_only
def test_plain_thread_pool_does_not_carry_the_container(ab: tuple[Container, Container]) -> None:
    a, _ = ab
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        warm(pool)
        with a:
            future = pool.submit(current)
            mapped = list(pool.map(lambda _: current(), range(4)))
        assert future.result(30) is host  # the documented contrast
        assert mapped == [host] * 4


def test_plain_thread_pool_runs_in_the_host(ab: tuple[Container, Container]) -> None:
    """Also true with PERCONTAINER_DISABLE=1, where everything is the host."""
    a, _ = ab
    with ThreadPoolExecutor(max_workers=1) as pool:
        with a:
            assert pool.submit(current).result(30) is host


def test_run_in_executor_with_wrap(ab: tuple[Container, Container]) -> None:
    a, b = ab

    async def main() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            await asyncio.gather(*(loop.run_in_executor(pool, current) for _ in range(WORKERS)))
            with a:
                wrapped = await loop.run_in_executor(pool, wrap(current))
                bare = await loop.run_in_executor(pool, current)
                with b:
                    wrapped_b = await loop.run_in_executor(pool, wrap(lambda x: (x, current())), 7)
            default_pool = await loop.run_in_executor(None, current)
            return wrapped, bare, wrapped_b, default_pool

    wrapped, bare, wrapped_b, default_pool = asyncio.run(main())
    assert bare is host
    assert default_pool is host
    if ENABLED:
        assert wrapped is a
        assert wrapped_b == (7, b)
    else:
        assert wrapped is host and wrapped_b == (7, host)


def test_asyncio_to_thread_carries_the_container(ab: tuple[Container, Container]) -> None:
    a, b = ab

    async def main() -> tuple[Container, Container, Container, Container]:
        with a:
            in_a = await asyncio.to_thread(current)
            with b:
                in_b = await asyncio.to_thread(current)
            again = await asyncio.to_thread(current)
        outside = await asyncio.to_thread(current)
        return in_a, in_b, again, outside

    in_a, in_b, again, outside = asyncio.run(main())
    assert outside is host
    if ENABLED:
        assert (in_a, in_b, again) == (a, b, a)
    else:
        assert (in_a, in_b, again) == (host, host, host)


def test_container_executor_from_asyncio(ab: tuple[Container, Container]) -> None:
    a, b = ab

    async def request(c: Container, pool: ContainerThreadPoolExecutor) -> Container:
        loop = asyncio.get_running_loop()
        with c:
            await asyncio.sleep(0)
            # run_in_executor goes through submit(), so the container is carried
            return await loop.run_in_executor(pool, current)

    async def main() -> list[Container]:
        with ContainerThreadPoolExecutor(max_workers=4) as pool:
            return await asyncio.gather(*(request(a if i % 2 else b, pool) for i in range(20)))

    results = asyncio.run(main())
    if ENABLED:
        assert results == [a if i % 2 else b for i in range(20)]
    else:
        assert results == [host] * 20


class InheritingThread(threading.Thread):
    """A thread as Python 3.14 starts one with thread_inherit_context on (the default on
    free-threaded builds): it runs in a copy of its creator's context."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._inherited = contextvars.copy_context()

    def run(self) -> None:
        self._inherited.run(super().run)


def _start_workers_inside(pool: ThreadPoolExecutor, tenant: Container) -> None:
    barrier = threading.Barrier(WORKERS)
    with tenant:  # every worker starts here, so with inheritance in the tenant's context
        futures = [pool.submit(barrier.wait, 30) for _ in range(WORKERS)]
    for future in futures:
        future.result(30)


@enabled_only
def test_workers_that_inherit_a_tenant_run_submitted_work_where_it_was_submitted(
        ab: tuple[Container, Container], monkeypatch: pytest.MonkeyPatch) -> None:
    """With thread_inherit_context, a plain pool's workers started inside tenant a run every
    later call in a (the leak README warns of); ContainerThreadPoolExecutor runs each call in
    the container current at submit(), the host included, whatever its workers inherited."""
    a, b = ab
    monkeypatch.setattr(threading, "Thread", InheritingThread)
    with ThreadPoolExecutor(WORKERS) as plain:
        _start_workers_inside(plain, a)
        assert plain.submit(current).result(30) is a  # the simulation inherits, as 3.14 does
    with ContainerThreadPoolExecutor(WORKERS) as pool:
        _start_workers_inside(pool, a)
        assert [pool.submit(current).result(30) for _ in range(4)] == [host] * 4
        with b:
            assert pool.submit(current).result(30) is b
        assert pool.submit(wrap(current)).result(30) is host
