"""Issue 9, factories and object values: add()/sum()/items() hold every value they pass to
Python code, a factory runs once whatever races it (threads, greenlets, fork), factories that
read each other raise instead of hanging, and teardown runs every exit hook exactly once.

Tests that used to crash the compiled core run in a subprocess (with PYTHONMALLOC=debug, so
that a freed object is overwritten and a read of it crashes), so the suite survives them.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from _pc_helpers import Box, run_threads, switch_often

New = Callable[..., Any]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_isolated(pc: ModuleType, body: str, timeout: float = 60) -> str:
    """Run body in a fresh interpreter with `pc` bound to the twin under test; return its
    stdout, failing on a crash or a non-zero exit."""
    script = (f"import importlib\npc = importlib.import_module({pc.__name__!r})\n"
              + textwrap.dedent(body))
    environment = dict(os.environ, PYTHONMALLOC="debug", PYTHONFAULTHANDLER="1")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


# -- 6: object add() and sum() hold the values they hand to Python code -----------------------
@pytest.mark.enabled_only
def test_add_holds_a_value_whose_add_drops_it(pc: ModuleType) -> None:
    """The stored value's __add__ resets the variable (the area held its only reference) and
    returns NotImplemented: CPython then tries int's __radd__ with the value."""
    out = run_isolated(pc, """
        var = pc.PerContainer("t.add_drops", default=0)

        class Dropper:
            def __add__(self, other):
                var.reset()
                return NotImplemented

        c = pc.Container()
        with c:
            var.set(Dropper())
            try:
                var.add(1)
            except TypeError as error:
                print("TypeError", "Dropper" in str(error))
            print(var.get())  # reset by __add__, and add() stored nothing
        c.close()
    """)
    assert out.split() == ["TypeError", "True", "0"]


@pytest.mark.enabled_only
def test_add_holds_a_value_that_the_deltas_radd_replaces(pc: ModuleType) -> None:
    out = run_isolated(pc, """
        var = pc.PerContainer("t.radd_replaces", default=0)

        class Plain:
            pass

        class Delta:
            def __radd__(self, other):
                var.set("replaced")  # drops the value add() read
                return NotImplemented

        c = pc.Container()
        with c:
            var.set(Plain())
            try:
                var.add(Delta())
            except TypeError as error:
                print("TypeError", "Plain" in str(error))
            print(var.get())
        c.close()
    """)
    assert out.split() == ["TypeError", "True", "replaced"]


@pytest.mark.enabled_only
def test_add_holds_its_value_while_another_thread_closes_the_container(pc: ModuleType) -> None:
    """A factory of c (not a user of c: of() enters nothing) adds to a counter of c; while the
    delta's __radd__ runs, the main thread closes c and its teardown frees the area."""
    out = run_isolated(pc, """
        import threading
        counter = pc.PerContainer("t.counter", default=0)
        inside, closed = threading.Event(), threading.Event()

        class Plain:
            pass

        class Slow:
            def __radd__(self, other):
                inside.set()
                assert closed.wait(10)
                return NotImplemented

        made = pc.PerContainer("t.made", factory=lambda: counter.add(Slow()))
        c = pc.Container()
        c.run(counter.set, Plain())
        outcome = []

        def read():
            try:
                made.of(c)
            except Exception as error:
                outcome.append(type(error).__name__)

        reader = threading.Thread(target=read)
        reader.start()
        assert inside.wait(10)
        c.close()
        closed.set()
        reader.join(10)
        print(*outcome)
    """)
    assert out.split() in (["TypeError"], ["ContainerClosedError"])


@pytest.mark.enabled_only
def test_add_in_a_container_closed_by_the_add_raises(pc: ModuleType, name: str) -> None:
    """A value whose __add__ closes the container it is added in (from a factory, so nobody is
    inside it): the sum is not stored in the dead container, and add() says so."""
    class Closer:
        def __add__(self, other: Any) -> int:
            c.close()
            return 5

    counter = pc.PerContainer(f"{name}.counter", default=0)
    made = pc.PerContainer(f"{name}.made", factory=lambda: counter.add(1))
    c = pc.Container()
    c.run(counter.set, Closer())
    with pytest.raises(pc.ContainerClosedError):
        made.of(c)
    assert c.closed
    with pytest.raises(pc.ContainerClosedError):
        counter.of(c)


@pytest.mark.enabled_only
def test_sum_holds_a_value_whose_radd_drops_it(pc: ModuleType) -> None:
    out = run_isolated(pc, """
        var = pc.PerContainer("t.sum_drops", default=None)

        class Dropper:
            def __radd__(self, other):
                c.run(var.reset)  # the area held the value's only reference
                return NotImplemented

        c = pc.Container()
        c.run(var.set, Dropper())
        try:
            var.sum()
        except TypeError as error:
            print("TypeError", "Dropper" in str(error))
        print(var.items())
        c.close()
    """)
    assert out.split() == ["TypeError", "True", "[]"]


@pytest.mark.enabled_only
def test_items_holds_each_value_while_it_makes_the_pair(pc: ModuleType) -> None:
    """A GC pass while items() makes a (container, value) pair runs a callback that resets the
    variable everywhere: the pair must hold a live value. The threshold sweep makes a pass
    fall on a pair's allocation whatever the interpreter allocates around it."""
    out = run_isolated(pc, """
        import gc

        var = pc.PerContainer("t.items_gc", default=None)

        class Value:
            def __init__(self, n):
                self.n = n

        tenants = [pc.Container() for _ in range(50)]
        armed = [False]

        def reset_all(phase, info):
            if phase == "start" and armed[0]:
                armed[0] = False
                for tenant in tenants:
                    tenant.run(var.reset)

        keep = []
        gc.callbacks.append(reset_all)
        for threshold in range(1, 12):
            for n, tenant in enumerate(tenants):
                tenant.run(var.set, Value(n))
            keep.extend((i, -i) for i in range(3000))  # no 2-tuple from the free list
            gc.collect()
            gc.set_threshold(threshold)
            armed[0] = True
            pairs = var.items()
            gc.set_threshold(700)
            armed[0] = False
            assert all(value.n == tenants.index(c) for c, value in pairs)
        gc.callbacks.remove(reset_all)
        for tenant in tenants:
            tenant.close()
        print("ok")
    """)
    assert out.split() == ["ok"]


# -- 10: the first reads from several threads run the factory once -----------------------------
def test_first_reads_from_racing_threads_run_the_factory_once(pc: ModuleType, name: str) -> None:
    """Each round, a new container and THREADS threads reading it at once (the first requests
    of a new tenant on a threaded server): one factory call, every reader gets its value."""
    threads, rounds = 6, 60
    calls: dict[Any, int] = {}

    def factory() -> Box:
        owner = pc.current()
        calls[owner] = calls.get(owner, 0) + 1
        return Box((name, owner))

    var = pc.PerContainer(name, factory=factory)
    tenants = [pc.Container(f"t{i}") for i in range(rounds)]
    barrier = threading.Barrier(threads)

    def reader() -> list[Any]:
        got = []
        for tenant in tenants:
            barrier.wait(10)
            got.append(var.of(tenant))
        return got

    try:
        with switch_often(1e-6):
            results = run_threads([reader] * threads, timeout=20)
        expected = [tenant if pc.ENABLED else pc.host for tenant in tenants]
        for index, tenant in enumerate(tenants):
            made = var.of(tenant)
            assert made.payload == (name, expected[index])
            assert all(result[index] is made for result in results)
        assert all(count == 1 for count in calls.values())
        assert len(calls) == (rounds if pc.ENABLED else 1)
    finally:
        for tenant in tenants:
            tenant.close()
        if not pc.ENABLED:
            var.reset()


# -- 11: factories that read each other from several threads; fork ------------------------------
def _cycle(pc: ModuleType, name: str, size: int) -> tuple[list[Any], list[threading.Event]]:
    """Declare `size` factory variables, each reading the next (the last reads the first), each
    factory first waiting until every factory has started (so each thread owns one)."""
    started = [threading.Event() for _ in range(size)]
    variables: list[Any] = []

    def factory_of(index: int) -> Callable[[], Any]:
        def factory() -> Any:
            started[index].set()
            assert all(event.wait(10) for event in started)
            return ("made", variables[(index + 1) % size].get())
        return factory

    variables.extend(pc.PerContainer(f"{name}.v{i}", factory=factory_of(i)) for i in range(size))
    return variables, started


@pytest.mark.parametrize("size", [2, 3])
def test_factories_reading_each_other_across_threads_raise(pc: ModuleType, new: New,
                                                           name: str, size: int) -> None:
    """Thread i makes variable i, whose factory reads variable i+1 (made by thread i+1): a
    cycle across threads. Each thread gets a ContainerError naming the variables; none hangs."""
    variables, _ = _cycle(pc, name, size)
    c = new()

    def reader(index: int) -> Any:
        try:
            return variables[index].of(c)
        except pc.ContainerError as error:
            return error

    results = run_threads([lambda i=i: reader(i) for i in range(size)], timeout=10)
    for result in results:
        assert isinstance(result, pc.ContainerError), result
        assert "cycle" in str(result) or "itself" in str(result)
        assert all(repr(v.name) in str(result) for v in variables), result
    assert all(v.items() == [] for v in variables)  # nothing half-made stays
    c.run(variables[0].set, "set")  # every variable is still usable
    assert variables[-1].of(c) == ("made", "set")
    if not pc.ENABLED:
        for variable in variables:
            variable.reset()


def test_factory_cycle_in_one_thread_names_the_variables(pc: ModuleType, new: New,
                                                         name: str) -> None:
    a: Any = None
    b: Any = None
    a = pc.PerContainer(f"{name}.a", factory=lambda: b.get())
    b = pc.PerContainer(f"{name}.b", factory=lambda: a.get())
    c = new()

    def attempt() -> str:
        with pytest.raises(pc.ContainerError) as raised:
            a.of(c)
        return str(raised.value)

    message = run_threads([attempt], timeout=10)[0]
    assert f"{a.name!r} -> {b.name!r} -> {a.name!r}" in message


def test_factory_waiting_on_another_thread_without_a_cycle_waits(pc: ModuleType, new: New,
                                                                 name: str) -> None:
    """A chain of waits that does not come back to the reader is no cycle: A's factory (thread
    1) waits for B's (thread 2), D's factory (thread 3) waits for A; all get their values."""
    b_started, a_started, release = threading.Event(), threading.Event(), threading.Event()

    def make_b() -> str:
        b_started.set()
        assert release.wait(10)
        return "b"

    def make_a() -> str:
        a_started.set()
        return "a+" + b.get()

    b = pc.PerContainer(f"{name}.b", factory=make_b)
    a = pc.PerContainer(f"{name}.a", factory=make_a)
    d = pc.PerContainer(f"{name}.d", factory=lambda: "d+" + a.get())
    c = new()

    def first() -> Any:
        assert b_started.wait(10)
        return a.of(c)

    def third() -> Any:
        assert a_started.wait(10)
        # Release B a little later, so that (most likely) thread 1 waits for B and this
        # thread for A meanwhile; the result is the same either way.
        threading.Timer(0.05, release.set).start()
        return d.of(c)

    results = run_threads([lambda: b.of(c), first, third], timeout=10)
    assert results == ["b", "a+b", "d+a+b"]
    if not pc.ENABLED:
        for variable in (a, b, d):
            variable.reset()


FORK = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

WAIT_FOR_CHILD = """
        def wait_for(pid):
            deadline = time.monotonic() + 10
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    return "hung"
                time.sleep(0.01)
"""


@FORK
def test_fork_while_another_thread_runs_a_factory(pc: ModuleType) -> None:
    """In the child, the thread that ran the factory is gone: its pending state must be too,
    so a read in the child runs the factory there instead of waiting forever."""
    out = run_isolated(pc, """
        import os, signal, threading, time, warnings
    """ + WAIT_FOR_CHILD + """
        started, release = threading.Event(), threading.Event()
        calls = []

        def factory():
            calls.append(1)
            if len(calls) == 1:
                started.set()
                assert release.wait(30)
            return ("made", len(calls))

        var = pc.PerContainer("t.forked", factory=factory)
        c = pc.Container()
        worker = threading.Thread(target=var.of, args=(c,))
        worker.start()
        assert started.wait(10)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:
            try:
                code = 0 if var.of(c) == ("made", 2) else 3
            except BaseException:
                code = 4
            os._exit(code)
        print("child", wait_for(pid))
        release.set()
        worker.join(10)
        print("parent", var.of(c))
        c.close()
    """)
    assert out.splitlines() == ["child 0", "parent ('made', 1)"]


@FORK
def test_fork_inside_a_factory_keeps_its_own_pending(pc: ModuleType) -> None:
    """A factory that forks: in the child the factory goes on (the forking thread survives), so
    its pending state stays: a thread of the child that reads meanwhile waits for that factory
    instead of running it again."""
    out = run_isolated(pc, """
        import os, signal, threading, time, warnings
    """ + WAIT_FOR_CHILD + """
        calls, children, seen = [], [], []

        def factory():
            calls.append(1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            children.append(pid)
            if pid == 0:  # a reader in the child while this factory still runs
                reader = threading.Thread(target=lambda: seen.append(var.of(c)))
                reader.start()
                children.append(reader)
                time.sleep(0.05)
            return ("made", os.getpid(), len(calls))

        var = pc.PerContainer("t.forking", factory=factory)
        c = pc.Container()
        value = var.of(c)
        if children[0] == 0:  # the child, after its factory returned
            children[1].join(10)
            ok = var.of(c) == value == ("made", os.getpid(), 1) and seen == [value]
            os._exit(0 if ok else 3)
        print("child", wait_for(children[0]))
        print("parent", value == ("made", os.getpid(), 1), var.of(c) is value)
        c.close()
    """)
    assert out.splitlines() == ["child 0", "parent True True"]


# -- 12: the factory's owner is the flow of execution, not the thread ---------------------------
def test_greenlets_racing_on_a_factory_share_one_value(pc: ModuleType, new: New,
                                                      name: str) -> None:
    """Greenlets (gevent without monkey-patching) share one thread: a greenlet that reads while
    another greenlet's factory yields waits for it, instead of being told it reads itself."""
    gevent = pytest.importorskip("gevent")
    calls: list[Any] = []

    def factory() -> Box:
        calls.append(pc.current())
        gevent.sleep(0)  # the other greenlets run, and read, meanwhile
        return Box((name, len(calls)))

    var = pc.PerContainer(name, factory=factory)
    c = new()
    greenlets = [gevent.spawn(var.of, c) for _ in range(5)]
    gevent.joinall(greenlets, timeout=10, raise_error=True)
    assert all(g.successful() for g in greenlets)
    values = [g.value for g in greenlets]
    assert calls == [c if pc.ENABLED else pc.host]
    assert all(value is values[0] for value in values)
    assert var.of(c) is values[0]
    if not pc.ENABLED:
        var.reset()


def test_greenlet_factories_reading_each_other_raise(pc: ModuleType, new: New,
                                                     name: str) -> None:
    gevent = pytest.importorskip("gevent")
    a: Any = None
    b: Any = None

    def make_a() -> Any:
        gevent.sleep(0)
        return b.get()

    def make_b() -> Any:
        gevent.sleep(0)
        return a.get()

    a = pc.PerContainer(f"{name}.a", factory=make_a)
    b = pc.PerContainer(f"{name}.b", factory=make_b)
    c = new()
    greenlets = [gevent.spawn(a.of, c), gevent.spawn(b.of, c)]
    gevent.joinall(greenlets, timeout=10)
    assert all(g.ready() for g in greenlets), "a greenlet hung"
    for greenlet in greenlets:
        assert isinstance(greenlet.exception, pc.ContainerError)
        assert repr(a.name) in str(greenlet.exception) and repr(b.name) in str(greenlet.exception)


def test_read_from_another_context_of_the_factorys_thread_raises(pc: ModuleType, new: New,
                                                                 name: str) -> None:
    """A factory that reads its own variable through a fresh Context: the reader is not the
    factory's flow by its context, but waiting would block the very thread that runs the
    factory. It raises (no hang)."""
    var: Any = None

    def factory() -> Any:
        return contextvars.Context().run(var.of, c)

    var = pc.PerContainer(name, factory=factory)
    c = new()

    def attempt() -> None:
        with pytest.raises(pc.ContainerError, match="itself"):
            var.of(c)

    run_threads([attempt], timeout=10)
    assert var.items() == []


def test_factory_run_in_a_copied_context_reading_itself_raises(pc: ModuleType, new: New,
                                                               name: str) -> None:
    """The factory hands the read to a thread in a copy of its context (asyncio.to_thread):
    that thread is the factory's flow, and would wait on it forever: it raises instead."""
    var: Any = None

    async def read_in_a_thread() -> Any:
        return await asyncio.to_thread(var.of, c)

    var = pc.PerContainer(name, factory=lambda: asyncio.run(read_in_a_thread()))
    c = new()

    def attempt() -> None:
        with pytest.raises(pc.ContainerError, match="itself"):
            var.of(c)

    run_threads([attempt], timeout=10)


# -- 14: a BaseException from an exit hook ------------------------------------------------------
INTERRUPTS = [KeyboardInterrupt, SystemExit, asyncio.CancelledError]


class _Hooks:
    """Three variables, declared first/bad/last; bad's hook raises `error`."""

    def __init__(self, pc: ModuleType, name: str, error: type[BaseException]) -> None:
        self.calls: list[str] = []

        def failing(value: Any) -> None:
            self.calls.append("bad")
            raise error(value)

        self.first = pc.PerContainer(f"{name}.first", default=0,
                                     on_exit=lambda v: self.calls.append("first"))
        self.bad = pc.PerContainer(f"{name}.bad", default=0, on_exit=failing)
        self.last = pc.PerContainer(f"{name}.last", default=0,
                                    on_exit=lambda v: self.calls.append("last"))

    def fill(self) -> weakref.ref[Box]:
        box = Box("first")
        self.first.set(box)
        self.bad.set("bad")
        self.last.set("last")
        return weakref.ref(box)


@pytest.mark.enabled_only
@pytest.mark.parametrize("error", INTERRUPTS)
def test_close_runs_every_hook_then_reraises_an_interrupt(pc: ModuleType, name: str,
                                                          error: type[BaseException]) -> None:
    hooks = _Hooks(pc, name, error)
    c = pc.Container()
    box = c.run(hooks.fill)
    with pytest.raises(error):
        c.close()
    assert hooks.calls == ["last", "bad", "first"]
    assert c.closed and c not in pc.containers()
    gc.collect()
    assert box() is None  # the values were dropped
    with pytest.raises(pc.ContainerClosedError):
        hooks.first.of(c)
    c.close()  # idempotent: the hooks do not run again
    assert hooks.calls == ["last", "bad", "first"]


@pytest.mark.enabled_only
@pytest.mark.parametrize("error", INTERRUPTS)
def test_last_user_out_runs_every_hook_then_reraises_an_interrupt(
        pc: ModuleType, name: str, error: type[BaseException]) -> None:
    """Teardown by the last user out: every hook runs and the values go; the interrupt is
    raised from the exit (it is not an error to report, the user asked to stop)."""
    hooks = _Hooks(pc, name, error)
    c = pc.Container()
    with pytest.raises(error):
        with c:
            box = hooks.fill()
            c.close()
    assert hooks.calls == ["last", "bad", "first"]
    assert pc.current() is pc.host
    gc.collect()
    assert box() is None
    with pytest.raises(pc.ContainerClosedError):
        hooks.last.of(c)


@pytest.mark.enabled_only
def test_interrupt_in_a_childs_deferred_teardown_still_tears_down_the_parent(
        pc: ModuleType, name: str) -> None:
    hooks = _Hooks(pc, name, KeyboardInterrupt)
    parent = pc.Container("p")
    child = pc.Container("c", parent=parent)
    parent.run(hooks.last.set, "parent")
    with pytest.raises(KeyboardInterrupt):
        with child:
            hooks.fill()
            parent.close()  # the child has a user: both wait
            assert hooks.calls == []
    assert hooks.calls == ["last", "bad", "first", "last"]  # the child's, then the parent's
    assert parent not in pc.containers() and child not in pc.containers()
    with pytest.raises(pc.ContainerClosedError):
        hooks.last.of(parent)


@pytest.mark.enabled_only
def test_interrupt_from_a_childs_hook_does_not_stop_the_parents_close(pc: ModuleType,
                                                                     name: str) -> None:
    hooks = _Hooks(pc, name, SystemExit)
    parent = pc.Container("p")
    first = pc.Container("c1", parent=parent)
    second = pc.Container("c2", parent=parent)
    first.run(hooks.bad.set, "c1")
    second.run(hooks.last.set, "c2")
    parent.run(hooks.first.set, "p")
    with pytest.raises(SystemExit):
        parent.close()
    assert sorted(hooks.calls) == ["bad", "first", "last"]
    assert hooks.calls[-1] == "first"  # the parent's hook after its children's
    assert not {parent, first, second} & set(pc.containers())


@pytest.mark.enabled_only
def test_deferred_teardown_reports_errors_and_raises_the_interrupt(
        pc: ModuleType, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    calls: list[str] = []

    def error_hook(value: Any) -> None:
        calls.append("error")
        raise ValueError(value)

    def interrupt_hook(value: Any) -> None:
        calls.append("interrupt")
        raise KeyboardInterrupt(value)

    first = pc.PerContainer(f"{name}.first", default=0, on_exit=interrupt_hook)
    second = pc.PerContainer(f"{name}.second", default=0, on_exit=error_hook)
    c = pc.Container()
    with pytest.raises(KeyboardInterrupt):
        with c:
            first.set(1)
            second.set(2)
            c.close()
    assert calls == ["error", "interrupt"]
    assert [type(r.exc_value) for r in reported] == [ValueError]
    assert c not in pc.containers()


# -- 15: values made during teardown get their exit hooks ---------------------------------------
@pytest.mark.enabled_only
@pytest.mark.parametrize("deferred", [False, True], ids=["close", "last_user_out"])
def test_values_made_by_exit_hooks_get_their_own_hooks(pc: ModuleType, name: str,
                                                       deferred: bool) -> None:
    """An exit hook reads a factory variable whose factory reads another: both values are made
    in the dying container, and each gets its on_exit once, before the values are dropped."""
    calls: list[tuple[str, Any, Any]] = []

    def hook(label: str) -> Callable[[Any], None]:
        return lambda value: calls.append((label, value, pc.current()))

    pool = pc.PerContainer(f"{name}.pool", factory=lambda: Box("pool"), on_exit=hook("pool"))
    conn = pc.PerContainer(f"{name}.conn", factory=lambda: Box(("conn", pool.get())),
                           on_exit=hook("conn"))
    # Declared last, so its hook runs first; it reads conn, which reads pool.
    user = pc.PerContainer(f"{name}.user", default=None,
                           on_exit=lambda value: calls.append(("user", conn.get(), pc.current())))
    c = pc.Container()
    if deferred:
        with c:
            user.set("u")
            c.close()
    else:
        c.run(user.set, "u")
        c.close()
    labels = [label for label, _, _ in calls]
    assert sorted(labels) == ["conn", "pool", "user"]
    assert labels[0] == "user"
    assert all(where is c for _, _, where in calls)
    made_conn = calls[0][1]
    assert ("conn", made_conn, c) in calls
    assert ("pool", made_conn.payload[1], c) in calls
    with pytest.raises(pc.ContainerClosedError):
        conn.of(c)


@pytest.mark.enabled_only
def test_value_set_by_an_exit_hook_gets_its_hook_once(pc: ModuleType, name: str) -> None:
    calls: list[Any] = []
    other: Any = None
    first = pc.PerContainer(f"{name}.first", default=None, on_exit=calls.append)

    def replace(value: Any) -> None:
        calls.append(value)
        first.set("set by a hook")  # first's old value already had its hook

    other = pc.PerContainer(f"{name}.other", default=None, on_exit=replace)
    c = pc.Container()
    c.run(first.set, "old")
    c.run(other.set, "other")
    c.close()
    assert calls == ["other", "old", "set by a hook"]


@pytest.mark.enabled_only
def test_exit_hook_that_always_makes_a_new_value_does_not_hang(pc: ModuleType,
                                                               name: str) -> None:
    var: Any = None
    made: list[Any] = []

    def renew(value: Any) -> None:
        made.append(value)
        var.set(Box(len(made)))

    var = pc.PerContainer(name, default=None, on_exit=renew)
    c = pc.Container()
    c.run(var.set, Box(0))
    with pytest.raises(pc.ContainerError, match="kept making"):
        c.close()
    assert c not in pc.containers() and 1 < len(made) < 1000
    with pytest.raises(pc.ContainerClosedError):
        var.of(c)
