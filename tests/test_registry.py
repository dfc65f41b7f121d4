"""TenantRegistry: one container per tenant key, made on demand, evicted when idle.

These tests use the top-level core (percontainer.IMPLEMENTATION), so they run under every env
mode; the ones that assert isolation between tenants are skipped with PERCONTAINER_DISABLE=1.
"""

from __future__ import annotations

import gc
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import percontainer
from percontainer import Container, ContainerError, PerContainer, current, host
from percontainer.registry import TenantRegistry, UnknownTenantError

enabled_only = pytest.mark.skipif(
    not percontainer.ENABLED, reason="asserts isolation; PERCONTAINER_DISABLE=1 is set")


class FakeClock:
    """An injectable clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


pytestmark = pytest.mark.usefixtures("no_leftover_containers")

# Limits that evict nothing in the tests using them, but take the registry's locked path.
LIMITS = pytest.mark.parametrize("limits", [
    {}, {"max_tenants": 100}, {"max_tenants": 100, "idle_timeout": 1e9}], ids=["none", "max", "idle"])


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What sys.unraisablehook receives during the test (checked by the test, not here)."""
    received: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", received.append)
    return received


@pytest.fixture
def exits(name: str) -> tuple[PerContainer[Any], list[tuple[str | None, Any]]]:
    """A variable whose exit hook records (container name, value) when its container closes."""
    log: list[tuple[str | None, Any]] = []
    variable: PerContainer[Any] = PerContainer(
        f"{name}.exits", default=None, on_exit=lambda value: log.append((current().name, value)))
    return variable, log


# -- get-or-create -----------------------------------------------------------------------------
def test_same_key_same_container(make: Callable[..., TenantRegistry]) -> None:
    reg = make()
    a = reg.get("a")
    assert isinstance(a, Container)
    assert a.name == "a"
    assert reg.get("a") is a
    with reg.use("a") as used:
        assert used is a
    b = reg.get("b")
    assert b is not a and b.name == "b"
    assert reg.keys() == ["a", "b"]
    assert len(reg) == 2 and "a" in reg and "zzz" not in reg
    assert not a.closed and not b.closed


def test_tenants_are_children_of_the_registry_parent(make: Callable[..., TenantRegistry]) -> None:
    reg = make()
    assert reg.get("a").parent is host
    parent = Container("parent")
    try:
        child_reg = make(parent=parent)
        assert child_reg.get("x").parent is parent
    finally:
        parent.close()


def test_auto_create_off(make: Callable[..., TenantRegistry]) -> None:
    reg = make(auto_create=False)
    with pytest.raises(UnknownTenantError):
        reg.get("a")
    with pytest.raises(LookupError):  # UnknownTenantError is a LookupError
        with reg.use("a"):
            pytest.fail("the block must not run for an unknown tenant")
    with pytest.raises(UnknownTenantError):
        reg.pin("a")
    assert len(reg) == 0 and reg.keys() == []
    created = reg.create("a")
    assert created.name == "a"
    assert reg.create("a") is created  # create() of a known key returns it
    assert reg.get("a") is created
    with reg.use("a") as used:
        assert used is created
    with pytest.raises(UnknownTenantError):
        reg.get("b")


def test_use_enters_the_container(make: Callable[..., TenantRegistry]) -> None:
    reg = make()
    assert current() is host
    with reg.use("a") as a:
        assert a.name == "a"
        if percontainer.ENABLED:
            assert current() is a
        else:
            assert current() is host
        with reg.use("b") as b:
            if percontainer.ENABLED:
                assert current() is b
        if percontainer.ENABLED:
            assert current() is a
    assert current() is host


@enabled_only
def test_use_isolates_tenant_values(make: Callable[..., TenantRegistry], name: str) -> None:
    counter = PerContainer(f"{name}.counter", default=0)
    reg = make()
    for _ in range(3):
        with reg.use("a"):
            counter.add(1)
    with reg.use("b"):
        counter.add(10)
    assert counter.get() == 0
    assert counter.of(reg.get("a")) == 3
    assert counter.of(reg.get("b")) == 10


def test_exception_in_use_block_unpins_and_exits(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)
    with pytest.raises(ZeroDivisionError):
        with reg.use("a"):
            1 / 0  # noqa: B018
    assert current() is host
    a = reg.get("a")
    with reg.use("b"):
        pass
    assert "a" not in reg and a.closed


# -- bad arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("key", [1, None, b"a", ("a",)])
def test_non_str_key_is_a_type_error(make: Callable[..., TenantRegistry], key: Any) -> None:
    reg = make()
    reg.get("a")
    for call in (reg.get, reg.create, reg.pin):
        with pytest.raises(TypeError):
            call(key)
    with pytest.raises(TypeError):
        with reg.use(key):
            pytest.fail("the block must not run")
    assert reg.keys() == ["a"]
    assert current() is host
    # the registry still works, and nothing was left pinned
    with reg.use("a") as a:
        assert a.name == "a"


@pytest.mark.parametrize("kwargs", [
    {"max_tenants": 0}, {"max_tenants": -1}, {"max_tenants": 2.0},
    {"idle_timeout": 0}, {"idle_timeout": -5}, {"idle_timeout": float("nan")},
])
def test_bad_limits_are_value_errors(kwargs: dict[str, Any]) -> None:
    before = set(percontainer.containers())
    with pytest.raises(ValueError):
        TenantRegistry(**kwargs)
    assert set(percontainer.containers()) == before


def test_good_limits(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1, idle_timeout=0.5)
    assert reg.max_tenants == 1 and reg.idle_timeout == 0.5


def test_unknown_tenant_leaves_state_unchanged(make: Callable[..., TenantRegistry]) -> None:
    clock = FakeClock()
    reg = make(auto_create=False, max_tenants=2, clock=clock)
    reg.create("a")
    reg.create("b")
    with pytest.raises(UnknownTenantError):
        reg.get("c")
    assert reg.keys() == ["a", "b"]  # nothing evicted, order unchanged
    assert not reg.get("a").closed


# -- eviction: max_tenants ---------------------------------------------------------------------
def test_lru_eviction_closes_tenants(
        make: Callable[..., TenantRegistry],
        exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]]) -> None:
    variable, log = exits
    reg = make(max_tenants=3)
    made: dict[str, Container] = {}
    for key in "abcde":
        with reg.use(key) as container:
            made[key] = container
            variable.set(f"value-{key}")
        assert len(reg) <= 3
    assert reg.keys() == ["c", "d", "e"]
    assert made["a"].closed and made["b"].closed
    assert not any(made[k].closed for k in "cde")
    if percontainer.ENABLED:
        assert log == [("a", "value-a"), ("b", "value-b")]  # exit hooks ran, inside the tenant
    # a later request for an evicted key gets a fresh container
    with reg.use("a") as again:
        assert again is not made["a"] and not again.closed
        if percontainer.ENABLED:
            assert variable.get() is None
    assert made["c"].closed
    assert reg.keys() == ["d", "e", "a"]


def test_lru_order_follows_use(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=3)
    a, b, c = reg.get("a"), reg.get("b"), reg.get("c")
    reg.get("a")  # a is now the most recently used: b is the least
    with reg.use("d"):
        pass
    assert b.closed and not a.closed and not c.closed
    assert reg.keys() == ["c", "a", "d"]


def test_in_flight_tenant_is_never_evicted(make: Callable[..., TenantRegistry],
                                           name: str) -> None:
    counter = PerContainer(f"{name}.counter", default=0)
    reg = make(max_tenants=1)
    entered = threading.Event()
    release = threading.Event()
    inside: dict[str, Any] = {}

    def request_a() -> None:
        with reg.use("a") as a:
            inside["container"] = a
            counter.set(42)
            entered.set()
            assert release.wait(30)
            inside["current"] = current()
            inside["value"] = counter.get()

    thread = threading.Thread(target=request_a, daemon=True)
    thread.start()
    try:
        assert entered.wait(30)
        a = inside["container"]
        others = []
        for i in range(30):
            with reg.use(f"k{i}") as other:
                others.append(other)
                counter.set(i)
            assert "a" in reg and not a.closed
        assert all(c.closed for c in others[:-1])  # the idle ones went, one by one
        if percontainer.ENABLED:
            assert counter.of(a) == 42
    finally:
        release.set()
        thread.join(30)
    assert not thread.is_alive()
    if percontainer.ENABLED:
        assert inside["current"] is a
        assert inside["value"] == 42
    # idle now: the next use evicts it (and the last k)
    with reg.use("z"):
        pass
    assert a.closed and reg.keys() == ["z"]


def test_over_limit_while_all_busy(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)
    with reg.use("a") as a, reg.use("b") as b, reg.use("c") as c:
        assert len(reg) == 3  # all pinned: the count runs over
    assert not (a.closed or b.closed or c.closed)
    assert reg.evict_idle() == 2
    assert reg.keys() == ["a"]  # a was used last: its block ended last
    assert b.closed and c.closed


# -- eviction: idle_timeout --------------------------------------------------------------------
def test_idle_timeout_with_fake_clock(
        make: Callable[..., TenantRegistry],
        exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]]) -> None:
    variable, log = exits
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    with reg.use("a") as a:
        variable.set("A")
    clock.now = 5
    with reg.use("b") as b:
        variable.set("B")
    clock.now = 9.9
    assert reg.evict_idle() == 0
    clock.now = 12
    assert reg.evict_idle() == 1  # a idle 12s, b only 7s
    assert a.closed and not b.closed and reg.keys() == ["b"]
    if percontainer.ENABLED:
        assert log == [("a", "A")]
    clock.now = 16  # b idle 11s: the next use (of another key) evicts it
    with reg.use("c") as c:
        assert b.closed
    assert reg.keys() == ["c"] and not c.closed
    if percontainer.ENABLED:
        assert log == [("a", "A"), ("b", "B")]


def test_idle_time_counts_from_the_end_of_the_last_request(
        make: Callable[..., TenantRegistry]) -> None:
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    with reg.use("a") as a:
        clock.now = 20  # a long request
        assert reg.evict_idle() == 0  # pinned: never evicted
        assert not a.closed
    clock.now = 29
    assert reg.evict_idle() == 0
    clock.now = 30
    assert reg.evict_idle() == 1
    assert a.closed and len(reg) == 0


def test_using_a_tenant_refreshes_it(make: Callable[..., TenantRegistry]) -> None:
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    a = reg.get("a")
    for t in range(5, 100, 5):
        clock.now = t
        assert reg.get("a") is a  # never idle for 10s
    assert not a.closed


def test_idle_timeout_after_a_long_request_of_another_tenant(
        make: Callable[..., TenantRegistry]) -> None:
    """b has been idle past the timeout; a was used (pinned) before b but its long request
    ended only recently. b must be evicted all the same."""
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    with reg.use("a") as a:  # a long request from t=0 to t=20
        clock.now = 1
        with reg.use("b") as b:  # a short one at t=1
            pass
        clock.now = 20
    clock.now = 25  # b idle for 24s, a for 5s
    assert reg.evict_idle() == 1  # got 0: the check stops at a, the least recently pinned
    assert b.closed and not a.closed
    assert reg.keys() == ["a"]


def test_idle_timeout_on_use_after_a_long_request(make: Callable[..., TenantRegistry]) -> None:
    """The same, checked by the next use instead of evict_idle()."""
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    with reg.use("a") as a:
        clock.now = 1
        b = reg.get("b")
        clock.now = 20
    clock.now = 25
    with reg.use("c"):
        pass
    assert b.closed, "b idle for 24s with idle_timeout=10 was not evicted"
    assert not a.closed


# -- evict(key) --------------------------------------------------------------------------------
def test_evict_one(make: Callable[..., TenantRegistry],
                   exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]]) -> None:
    variable, log = exits
    reg = make()
    with reg.use("a") as a:
        variable.set("A")
    b = reg.get("b")
    assert reg.evict("a") is True
    assert a.closed and not b.closed and reg.keys() == ["b"]
    if percontainer.ENABLED:
        assert log == [("a", "A")]
    assert reg.evict("a") is False
    assert reg.evict("nope") is False
    fresh = reg.get("a")
    assert fresh is not a and not fresh.closed


def test_evict_during_request_lets_it_finish(
        make: Callable[..., TenantRegistry],
        exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]]) -> None:
    """evict(key) forgets the tenant at once; its container closes when its last request ends."""
    variable, log = exits
    reg = make()
    with reg.use("a") as a:
        variable.set("A")
        assert reg.evict("a")
        assert "a" not in reg
        assert not a.closed  # a request is in flight: closed when it ends
        if percontainer.ENABLED:
            assert current() is a and variable.get() == "A"
        with reg.use("a") as fresh:  # a new request gets a fresh container
            assert fresh is not a and not fresh.closed
            if percontainer.ENABLED:
                assert variable.get() is None
        assert log == []
        assert not a.closed
    assert a.closed
    if percontainer.ENABLED:
        assert log == [("a", "A")]
    assert reg.get("a") is fresh and not fresh.closed


@LIMITS
def test_evict_pinned_tenant_closes_on_last_unpin(make: Callable[..., TenantRegistry],
        limits: dict[str, Any]) -> None:
    """pin()/unpin() (what the WSGI middleware uses across a streamed body) count the same."""
    reg = make(**limits)
    a = reg.pin("a")
    a2 = reg.pin("a")
    assert a2 is a
    assert reg.evict("a") is True
    assert reg.evict("a") is False  # already forgotten
    assert not a.closed
    reg.unpin("a", a)
    assert not a.closed  # one request still holds it
    fresh = reg.get("a")
    assert fresh is not a
    reg.unpin("a", a2)
    assert a.closed and not fresh.closed
    assert reg.keys() == ["a"] and reg.get("a") is fresh


def test_close_registry_while_a_request_is_in_flight(
        exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]]) -> None:
    variable, log = exits
    reg = TenantRegistry()
    with reg.use("a") as a:
        variable.set("A")
        reg.close()
        assert a.closed  # closed, but the request finishes inside it
        if percontainer.ENABLED:
            assert current() is a and variable.get() == "A"
            assert log == []
    if percontainer.ENABLED:
        assert log == [("a", "A")]
    with pytest.raises(ContainerError):
        reg.get("a")


@pytest.mark.slow
@LIMITS
def test_request_racing_evict(make: Callable[..., TenantRegistry], name: str,
        limits: dict[str, Any]) -> None:
    marker: PerContainer[int | None] = PerContainer(f"{name}.marker", default=None)
    reg = make(**limits)
    other = reg.get("other")
    rounds = 2_000
    done = threading.Event()
    errors: list[BaseException] = []
    seen: set[int] = set()
    evictions = [0]

    start = threading.Barrier(2)

    def requester() -> None:
        try:
            start.wait(30)
            i = 0
            deadline = time.monotonic() + 30
            while (i < rounds or evictions[0] < 100) and time.monotonic() < deadline:
                i += 1
                with reg.use("k") as c:
                    assert c.name == "k"
                    assert c is not other
                    seen.add(c.id)
                    if percontainer.ENABLED:
                        assert current() is c
                        marker.set(i)
                        assert marker.get() == i
        except BaseException as error:  # noqa: BLE001  # re-raised in the test
            errors.append(error)
        finally:
            done.set()

    def evictor() -> None:
        try:
            start.wait(30)
            while not done.is_set():
                if reg.evict("k"):
                    evictions[0] += 1
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=requester, daemon=True),
               threading.Thread(target=evictor, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert evictions[0] > 0
    assert other.id not in seen and not other.closed
    assert current() is host


# -- close() -----------------------------------------------------------------------------------
def test_close_closes_all(exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]]) -> None:
    variable, log = exits
    reg = TenantRegistry()
    tenants = []
    for key in "abc":
        with reg.use(key) as c:
            variable.set(key.upper())
            tenants.append(c)
    reg.close()
    assert all(c.closed for c in tenants)
    assert len(reg) == 0 and reg.keys() == []
    if percontainer.ENABLED:
        assert sorted(log) == [("a", "A"), ("b", "B"), ("c", "C")]
    with pytest.raises(ContainerError):
        with reg.use("a"):
            pytest.fail("a closed registry must not run the block")
    with pytest.raises(ContainerError):
        reg.get("d")
    with pytest.raises(ContainerError):
        reg.create("d")
    reg.close()  # idempotent
    assert len(reg) == 0


def test_registry_as_context_manager() -> None:
    with TenantRegistry() as reg:
        a = reg.get("a")
    assert a.closed
    with pytest.raises(ContainerError):
        reg.get("a")


# -- exit hooks that raise during eviction ------------------------------------------------------
@enabled_only
def test_failing_exit_hook_on_eviction_is_reported_not_raised(
        make: Callable[..., TenantRegistry], name: str, reports: list[Any]) -> None:
    """A tenant evicted to make room for another request has an exit hook that raises: the
    error goes to sys.unraisablehook, the unrelated request succeeds and is not left pinned."""

    def hook(value: Any) -> None:
        if value == "boom":
            raise RuntimeError("exit hook failed")

    variable = PerContainer(f"{name}.boom", default=None, on_exit=hook)
    reg = make(max_tenants=1)
    with reg.use("a") as a:
        variable.set("boom")
    with reg.use("b") as b:  # evicts a: its hook fails
        assert current() is b
    assert a.closed
    assert len(reports) == 1
    assert isinstance(reports[0].exc_value, RuntimeError)
    assert "exit hook failed" in str(reports[0].exc_value)
    with reg.use("c"):
        pass
    assert reg.keys() == ["c"] and b.closed  # b was not left pinned


@enabled_only
def test_failing_exit_hook_does_not_stop_other_evictions(name: str) -> None:
    """evict_idle() evicts two tenants; the first one's exit hook raises. The second must be
    closed all the same (it is no longer in the registry, so nothing else would ever close it)."""
    log: list[Any] = []

    def hook(value: Any) -> None:
        log.append(value)
        if value == "boom":
            raise RuntimeError("exit hook failed")

    variable = PerContainer(f"{name}.boom", default=None, on_exit=hook)
    clock = FakeClock()
    reg = TenantRegistry(idle_timeout=10, clock=clock)
    try:
        with reg.use("a") as a:
            variable.set("boom")
        with reg.use("b") as b:
            variable.set("fine")
        clock.now = 100
        try:
            reg.evict_idle()
        except RuntimeError:
            pass
        assert a.closed
        assert b.closed, "b was unlinked from the registry but never closed"
        assert log == ["boom", "fine"]
    finally:
        reg.close()
        for c in [c for c in percontainer.containers() if c.name in ("a", "b")]:
            try:
                c.close()
            except RuntimeError:
                pass


# -- many threads ------------------------------------------------------------------------------
def test_many_threads_pin_and_use(make: Callable[..., TenantRegistry], name: str) -> None:
    """16 threads x 2,000 operations over 50 keys with max_tenants=10."""
    threads_n, ops, keys_n = 16, 2_000, 50
    finals: dict[int, int] = {}
    finals_lock = threading.Lock()

    def record_final(value: int) -> None:
        with finals_lock:
            finals[current().id] = value

    counter = PerContainer(f"{name}.counter", default=0, on_exit=record_final)
    # each tenant's own dict: which key it belongs to, and each thread's last token
    notes: PerContainer[dict[Any, Any]] = PerContainer(f"{name}.notes", factory=dict)
    reg = make(max_tenants=10)
    owner_of: dict[int, str] = {}
    owner_lock = threading.Lock()
    uses: list[dict[int, int]] = [{} for _ in range(threads_n)]
    problems: list[str] = []
    barrier = threading.Barrier(threads_n)

    def check_inside(index: int, key: str, c: Container, op: int) -> None:
        if c.name != key:
            problems.append(f"use({key!r}) gave {c!r}")
        with owner_lock:
            if owner_of.setdefault(c.id, key) != key:
                problems.append(f"{c!r} entered for {key!r} and {owner_of[c.id]!r}")
        uses[index][c.id] = uses[index].get(c.id, 0) + 1
        if percontainer.ENABLED:
            if current() is not c:
                problems.append(f"current() is {current()!r} inside {c!r}")
            counter.add(1)
            mine = notes.get()
            if mine.setdefault("key", key) != key:
                problems.append(f"{key!r} reads the values of tenant {mine['key']!r}")
            mine[index] = op
            if random.random() < 0.1:
                threading.Event().wait(0.0001)  # let others run while we hold the tenant
            if notes.get() is not mine or mine[index] != op:
                problems.append(f"{key!r}: wrote {op}, read back {notes.get().get(index)}")

    def worker(index: int) -> None:
        rng = random.Random(index)
        barrier.wait(30)
        for op in range(ops):
            key = f"t{rng.randrange(keys_n)}"
            if rng.random() < 0.5:
                with reg.use(key) as c:
                    check_inside(index, key, c, op)
            else:
                c = reg.pin(key)
                try:
                    with c:
                        check_inside(index, key, c, op)
                finally:
                    reg.unpin(key, c)

    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            worker(index)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[:3]
    assert not problems, problems[:10]
    assert len(reg) <= 10  # all idle again: back under the limit
    assert current() is host
    reg.close()
    if percontainer.ENABLED:
        total: dict[int, int] = {}
        for tally in uses:
            for cid, count in tally.items():
                total[cid] = total.get(cid, 0) + count
        # every container's final counter equals the uses made of it
        assert finals == total
        assert sum(total.values()) == threads_n * ops


# -- enter / leave: the ASGI middleware's hot path ---------------------------------------------
@pytest.mark.parametrize("limits", [{}, {"max_tenants": 5}])
def test_enter_and_leave(make: Callable[..., TenantRegistry], limits: dict[str, Any]) -> None:
    reg = make(**limits)
    a = reg.enter("a")  # made on demand
    try:
        assert "a" in reg and a.in_use
        assert current() is (a if percontainer.ENABLED else host)
        again = reg.enter("a")  # found, nested
        assert again is a
        reg.leave("a", again)
    finally:
        reg.leave("a", a)
    assert current() is host and not a.in_use and not a.closed
    assert reg.get("a") is a


@LIMITS
def test_evict_while_entered_tears_down_at_leave(
        make: Callable[..., TenantRegistry],
        exits: tuple[PerContainer[Any], list[tuple[str | None, Any]]],
        limits: dict[str, Any]) -> None:
    variable, log = exits
    reg = make(**limits)
    a = reg.enter("a")
    try:
        variable.set("A")
        assert reg.evict("a") and "a" not in reg
        assert log == []  # someone is inside: the teardown waits
        fresh = reg.enter("a")
        assert fresh is not a
        reg.leave("a", fresh)
    finally:
        reg.leave("a", a)
    assert a.closed
    assert log == ([("a", "A")] if percontainer.ENABLED else [])


def test_enter_refuses_after_close(make: Callable[..., TenantRegistry]) -> None:
    reg = make()
    reg.get("a")
    reg.close()
    with pytest.raises(ContainerError, match="closed"):
        reg.enter("a")
    assert current() is host


def test_busy_tenant_is_not_evicted_by_max_tenants(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)
    a = reg.enter("a")
    try:
        for key in ("b", "c"):
            reg.get(key)
            assert "a" in reg and not a.closed  # in use: never the one evicted
    finally:
        reg.leave("a", a)
    reg.get("d")
    assert "a" not in reg and a.closed


@pytest.mark.parametrize("timed", [False, True])
def test_lru_order_follows_enter_and_leave(make: Callable[..., TenantRegistry],
                                           timed: bool) -> None:
    """The tenants are in order of last use, start (enter) or end (leave)."""
    clock = FakeClock()
    reg = make(max_tenants=3, clock=clock, **({"idle_timeout": 1e9} if timed else {}))
    made = {}
    for key in "abc":
        made[key] = reg.enter(key)
        reg.leave(key, made[key])
    assert reg.keys() == ["a", "b", "c"]
    a = reg.enter("a")  # started last
    assert reg.keys() == ["b", "c", "a"]
    b = reg.enter("b")
    reg.leave("b", b)
    assert reg.keys() == ["c", "a", "b"]
    reg.leave("a", a)  # ended last: the latest use
    assert reg.keys() == ["c", "b", "a"]
    c = reg.enter("c")
    reg.leave("c", c)  # started and ended with no use between
    assert reg.keys() == ["b", "a", "c"]
    d = reg.enter("d")  # one too many: the least recently used idle one goes
    try:
        assert reg.keys() == ["a", "c", "d"]
        assert made["b"].closed and not any(made[k].closed for k in "ac")
    finally:
        reg.leave("d", d)


def test_lru_order_with_overlapping_uses(make: Callable[..., TenantRegistry]) -> None:
    """A use that began before another and ended after it is the later one."""
    reg = make(max_tenants=2)
    a = reg.enter("a")
    b = reg.enter("b")
    reg.leave("b", b)
    reg.leave("a", a)
    assert reg.keys() == ["b", "a"]
    c = reg.get("c")  # b goes, not a
    assert reg.keys() == ["a", "c"] and b.closed and not a.closed and not c.closed


def test_idle_time_counts_from_leave(make: Callable[..., TenantRegistry]) -> None:
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    b = reg.get("b")
    a = reg.enter("a")
    clock.now = 20
    assert reg.evict_idle() == 1  # b, idle for 20s; a is inside
    reg.leave("a", a)
    clock.now = 29
    assert reg.evict_idle() == 0  # idle for 9s since its leave
    clock.now = 30
    with reg.use("c"):  # a use evicts it too, not only evict_idle()
        pass
    assert a.closed and b.closed and reg.keys() == ["c"]


@pytest.mark.parametrize("how", ["enter", "pin"])
def test_evicted_by_max_tenants_only_once_unused(make: Callable[..., TenantRegistry],
                                                 how: str) -> None:
    """A tenant over the limit while in use stays until its last user is gone, and goes at the
    next use of another tenant after that."""
    reg = make(max_tenants=1)
    a = reg.enter("a") if how == "enter" else reg.pin("a")
    try:
        for key in ("b", "c", "d"):
            with reg.use(key):
                assert "a" in reg and not a.closed
    finally:
        if how == "enter":
            reg.leave("a", a)
        else:
            reg.unpin("a", a)
    assert "a" in reg and not a.closed  # nothing has looked since
    with reg.use("e"):
        pass
    assert a.closed and reg.keys() == ["e"]


@enabled_only
def test_many_threads_enter_and_leave(make: Callable[..., TenantRegistry], name: str) -> None:
    """8 threads enter and leave 30 tenants kept to 5, the GIL switching every microsecond:
    inside, every tenant reads only its own values and is never closed; every use counts."""
    threads_n, ops, keys_n = 8, 1_500, 30
    tag: PerContainer[str | None] = PerContainer(f"{name}.tag", default=None)
    counted: dict[int, int] = {}
    counted_lock = threading.Lock()

    def note_final(value: int) -> None:
        with counted_lock:
            counted[current().id] = value

    uses = PerContainer(f"{name}.uses", default=0, on_exit=note_final)
    reg = make(max_tenants=5)
    made: list[dict[int, int]] = [{} for _ in range(threads_n)]
    problems: list[str] = []
    barrier = threading.Barrier(threads_n)

    def worker(index: int) -> None:
        rng = random.Random(index)
        barrier.wait(30)
        for _ in range(ops):
            key = f"t{rng.randrange(keys_n)}"
            c = reg.enter(key)
            try:
                mine = tag.get()
                if mine is None:
                    tag.set(key)
                elif mine != key:
                    problems.append(f"{key!r} reads the values of {mine!r}")
                if current() is not c or c.name != key:
                    problems.append(f"enter({key!r}) gave {c!r}, current() is {current()!r}")
                uses.add(1)
                made[index][c.id] = made[index].get(c.id, 0) + 1
                if rng.random() < 0.05:
                    threading.Event().wait(0.0001)  # others run while this one is inside
                if c.closed:
                    problems.append(f"{c!r} was closed with a request inside")
                if tag.get() != key:
                    problems.append(f"{key!r} now reads {tag.get()!r}")
            finally:
                reg.leave(key, c)

    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            worker(index)
        except BaseException as error:  # noqa: BLE001  # re-raised in the test
            errors.append(error)

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(threads_n)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        sys.setswitchinterval(old)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[:3]
    assert not problems, problems[:10]
    assert len(reg) <= 5 and current() is host
    reg.close()
    total: dict[int, int] = {}
    for tally in made:
        for cid, count in tally.items():
            total[cid] = total.get(cid, 0) + count
    assert counted == total  # each container counted exactly the uses made of it
    assert sum(total.values()) == threads_n * ops
    assert len(total) > keys_n  # tenants were evicted and made afresh


# -- a gc pass that uses the registry ------------------------------------------------------------
class GcClock(FakeClock):
    """A clock (which the registry reads while it holds its lock) that runs a gc pass on
    demand, collecting a cycle whose finalizer calls `then`."""

    def __init__(self) -> None:
        super().__init__()
        self.then: list[Callable[[], None]] = []

    def __call__(self) -> float:
        if self.then:
            _Litter(self.then.pop())
            gc.collect()
        return self.now


class _Litter:
    def __init__(self, then: Callable[[], None]) -> None:
        self.then = then
        self.cycle = self

    def __del__(self) -> None:
        self.then()


def without_deadlock(body: Callable[[], None]) -> None:
    """Run body in a thread of its own; fail if it has not ended within a minute (a deadlock,
    rather than a hung test run: a registry deadlocked on its lock cannot be closed either)."""
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            body()
        except BaseException as error:  # noqa: BLE001  # re-raised in the test
            errors.append(error)

    thread = threading.Thread(target=runner, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "deadlock: a finalizer used the registry while it was locked"
    if errors:
        raise errors[0]


def test_finalizer_evicting_the_tenant_being_pinned(reports: list[Any]) -> None:
    clock = GcClock()
    reg = TenantRegistry(idle_timeout=100, clock=clock)

    def body() -> None:
        old = reg.get("a")
        evicted: list[bool] = []
        clock.then.append(lambda: evicted.append(reg.evict("a")))
        with reg.use("a") as a:  # the clock's call, under the lock, evicts it
            assert evicted == [True] and a is old
            assert "a" not in reg and not a.closed  # pinned: closed by the last unpin
            fresh = reg.get("a")
            assert fresh is not a
        assert a.closed and reg.get("a") is fresh and not fresh.closed
        reg.close()

    without_deadlock(body)
    assert not reports


def test_finalizer_making_the_tenant_being_made(reports: list[Any]) -> None:
    clock = GcClock()
    reg = TenantRegistry(idle_timeout=100, clock=clock)

    def body() -> None:
        inner: list[Container] = []
        clock.then.append(lambda: inner.append(reg.get("a")))
        before = set(percontainer.containers())
        a = reg.get("a")  # the clock's call, under the lock, makes it too: one is kept
        assert inner == [a] and reg.keys() == ["a"] and not a.closed
        assert set(percontainer.containers()) - before == {a}  # the other one was closed
        reg.close()

    without_deadlock(body)
    assert not reports


def test_finalizer_using_other_tenants_during_eviction(reports: list[Any]) -> None:
    clock = GcClock()
    reg = TenantRegistry(max_tenants=2, idle_timeout=100, clock=clock)

    def body() -> None:
        a, b = reg.get("a"), reg.get("b")
        made: list[Container] = []

        def meanwhile() -> None:
            with reg.use("a"):  # a is used: b is now the least recently used
                made.append(reg.get("x"))  # and one over the limit: evicts b

        clock.then.append(meanwhile)
        with reg.use("c") as c:  # made: its clock call, under the lock, runs meanwhile()
            assert made and b.closed
        x = made[0]
        assert reg.keys() == ["a", "c"]  # c was one over the limit: x, the least recent, went
        assert x.closed and not a.closed and not c.closed
        reg.close()

    without_deadlock(body)
    assert not reports


# A gc pass at one given call: the Python twin's Container methods are Python code, so a test
# can run a finalizer's work at exactly the call where a gc pass might run it.
twin_only = pytest.mark.skipif(
    percontainer.IMPLEMENTATION != "python",
    reason="hooks the Python twin's Container; PERCONTAINER_NO_EXTENSIONS=1 runs these")


def at_call(monkeypatch: pytest.MonkeyPatch, name: str, action: Callable[[], object], *,
            nth: int = 1, after: bool = False) -> None:
    """Run action() at the nth next call of Container.<name> (a method, or the in_use or
    pinned property), before it or after it."""
    original = Container.__dict__[name]
    call: Callable[..., Any] = (
        original.fget if isinstance(original, property) and original.fget else original)
    calls = [0]

    def hooked(self: Container, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth and not after:
            action()
        result = call(self, *args)
        if calls[0] == nth and after:
            action()
        return result

    monkeypatch.setattr(Container, name, property(hooked) if isinstance(original, property)
                        else hooked)


@twin_only
@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("limits", [{}, {"max_tenants": 10}], ids=["none", "max"])
@pytest.mark.parametrize("known", [True, False], ids=["known", "new"])
def test_finalizer_evicting_at_the_pin(make: Callable[..., TenantRegistry],
                                       monkeypatch: pytest.MonkeyPatch, after: bool,
                                       limits: dict[str, Any], known: bool) -> None:
    """evict(key) runs just before or after the registry pins that tenant for a request: the
    request gets a live tenant, listed, and the evicted one is closed once nobody uses it."""
    reg = make(**limits)
    old = reg.get("a") if known else None
    evicted: list[Container] = []

    def evict() -> None:
        evicted.append(reg.get("a"))  # a finalizer that uses the tenant, then evicts it
        assert reg.evict("a")

    at_call(monkeypatch, "pin", evict, after=after)
    with reg.use("a") as used:
        assert used.name == "a" and not used.closed and reg.get("a") is used
        if percontainer.ENABLED:
            assert current() is used
    assert evicted and evicted[0] is not used and evicted[0].closed
    assert old is None or old is evicted[0]
    assert reg.keys() == ["a"] and not used.closed


@twin_only
def test_finalizer_reordering_during_the_eviction_walk(make: Callable[..., TenantRegistry],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A finalizer uses a tenant while eviction walks the tenants in order (which changes it):
    the walk starts again, and the least recently used idle tenant goes all the same."""
    reg = make(max_tenants=2)
    a = reg.pin("a")  # in use: the walk passes over it
    try:
        b = reg.get("b")
        at_call(monkeypatch, "in_use", lambda: reg.get("b"))  # b is now the latest used
        c = reg.get("c")  # one over: the walk asks a, then finds the order changed
        assert reg.keys() == ["a", "c"]  # b went (c was in use: being pinned)
        assert b.closed and not a.closed and not c.closed
    finally:
        reg.unpin("a", a)


@twin_only
def test_finalizer_evicting_a_chosen_tenant(make: Callable[..., TenantRegistry],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Between choosing idle tenants and unlisting them, a finalizer evicts one of them."""
    clock = FakeClock()
    reg = make(idle_timeout=10, clock=clock)
    a, b = reg.get("a"), reg.get("b")
    clock.now = 100
    # in_use is asked of a and b (both idle, chosen), then of a again once it is unlisted.
    at_call(monkeypatch, "in_use", lambda: reg.evict("b"), nth=3)
    assert reg.evict_idle() == 1  # a; b was evicted by the finalizer
    assert a.closed and b.closed and reg.keys() == []


@twin_only
@pytest.mark.parametrize("fresh", [False, True], ids=["kept", "made-afresh"])
def test_finalizer_entering_a_chosen_tenant(make: Callable[..., TenantRegistry],
                                            monkeypatch: pytest.MonkeyPatch,
                                            fresh: bool) -> None:
    """Between unlisting a chosen idle tenant and closing it, a finalizer enters its container
    (a with-block on what get() returned): it is listed again, as the latest used, unless the
    finalizer also made the tenant afresh (then it goes, as with evict(): its teardown waits
    for the one inside)."""
    reg = make(max_tenants=1)
    a = reg.get("a")
    made: list[Container] = []

    def enter_a() -> None:
        a.__enter__()
        if fresh:
            made.append(reg.create("a"))

    at_call(monkeypatch, "in_use", enter_a, nth=2)  # asked in the walk, then once unlisted
    b = reg.get("b")  # one over: a is chosen and unlisted; enter_a() runs at the check
    try:
        if fresh:
            assert a.closed and made and made[0] is not a and not made[0].closed
            assert reg.keys() == ["a", "b"]  # the fresh a; then get("b") ended
        else:
            assert not a.closed and reg.keys() == ["a", "b"]  # listed again; then get("b") ended
        assert not b.closed
        if percontainer.ENABLED:
            assert current() is a
    finally:
        a.__exit__(None, None, None)
    assert reg.evict_idle() == 1 and reg.keys() == ["b"]  # over the limit while a was busy


@pytest.mark.parametrize("limits", [{}, {"max_tenants": 3}, {"max_tenants": 3, "idle_timeout": 5}])
def test_gc_pass_using_the_registry_inside_it(limits: dict[str, Any]) -> None:
    """A gc pass can start at nearly any allocation (from 3.12, at nearly any call) while the
    thread is inside a registry method, holding its lock; a gc callback or finalizer there that
    uses the registry must neither deadlock nor break it."""
    clock = FakeClock()
    reg = TenantRegistry(clock=clock, **limits)
    state = {"busy": False, "runs": 0}
    errors: list[BaseException] = []
    worker_ident: list[int] = []

    def check(key: str, container: Container) -> None:
        assert container.name == key  # closed, maybe: evict(key) does not wait for those inside
        if percontainer.ENABLED:
            assert current() is container

    def callback(phase: str, info: dict[str, Any]) -> None:
        if (phase != "start" or state["busy"] or not worker_ident
                or threading.get_ident() != worker_ident[0]):
            return
        state["busy"] = True
        state["runs"] += 1
        run = state["runs"]
        try:
            key = f"g{run % 4}"  # known and unknown keys: finding, making and evicting tenants
            with reg.use(key) as used:
                check(key, used)
            entered = reg.enter(key)
            try:
                check(key, entered)
            finally:
                reg.leave(key, entered)
            if run % 5 == 0:
                reg.evict(f"k{run % 6}")
            if run % 7 == 0:
                reg.evict_idle()
        except BaseException as error:  # noqa: BLE001  # an error in a gc callback is only printed
            errors.append(error)
        finally:
            state["busy"] = False

    def work() -> None:
        worker_ident.append(threading.get_ident())
        for op in range(1_500):
            clock.now = op / 10  # idle_timeout=5 evicts what went unused for 50 ops
            key = f"k{op % 6}"
            if op % 3 == 0:
                entered = reg.enter(key)
                try:
                    check(key, entered)
                finally:
                    reg.leave(key, entered)
            elif op % 3 == 1:
                with reg.use(key) as used:
                    check(key, used)
            else:
                pinned = reg.pin(key)
                reg.unpin(key, pinned)
            if op % 50 == 0:
                reg.evict(key)
            if op % 40 == 0:
                keys = reg.keys()
                assert len(set(keys)) == len(keys)

    def runner() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001  # re-raised in the test
            errors.append(error)

    thread = threading.Thread(target=runner, daemon=True)
    old = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        thread.start()
        thread.join(60)
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(callback)
    # A deadlocked worker holds the registry's lock for good: closing it would hang too.
    assert not thread.is_alive(), "deadlock: a gc pass used the registry while its thread held the lock"
    try:
        assert not errors, errors[:3]
        assert state["runs"] > 100  # the gc passes did use the registry
        assert current() is host
        listed = reg.keys()
        live = {key: reg.get(key) for key in listed}
        assert all(c.name == key and not c.closed for key, c in live.items())
        if "max_tenants" in limits:
            assert len(reg) <= limits["max_tenants"]
    finally:
        reg.close()
