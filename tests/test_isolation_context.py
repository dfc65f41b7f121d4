"""The current container follows the context, whatever wrote it, and no entry outlives its
context: third-party writes of the private ContextVar (pytest-asyncio, asgiref), values of the
wrong type, entries never left, mis-nested exits, coroutines."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest

from _pc_helpers import Box, eventually, run_threads, switch_often

VAR_NAME = "percontainer.current"


def current_var_of(pc: ModuleType) -> contextvars.ContextVar[Any]:
    """Find the private current-container ContextVar as a third party does: by iterating a
    context in which a container is entered (each twin has its own var of that name)."""
    c = pc.Container()
    try:
        with c:
            ctx = contextvars.copy_context()
    finally:
        c.close()
    found = [var for var in ctx if var.name == VAR_NAME and type(ctx[var]).__module__ == pc.__name__]
    assert len(found) == 1
    return found[0]



# -- a third party writes the ContextVar ---------------------------------------------------------
@pytest.mark.enabled_only
def test_a_frame_set_by_a_third_party_is_current(pc: ModuleType, name: str) -> None:
    """pytest-asyncio and asgiref copy context values across with ContextVar.set()."""
    var = pc.PerContainer(name, default="host")
    cv = current_var_of(pc)
    a, b = pc.Container("a"), pc.Container("b")
    try:
        a.run(var.set, "a")
        b.run(var.set, "b")
        with a:
            ctx_a = contextvars.copy_context()
        with b:
            assert var.get() == "b"
            token = cv.set(ctx_a[cv])  # what asgiref's _restore_context does
            assert pc.current() is a and var.get() == "a"
            var.set("a2")
            with pytest.raises(pc.ContainerError, match="nest"):
                b.__exit__(None, None, None)  # a is current: b cannot be left, nothing changes
            assert pc.current() is a and var.get() == "a2"
            cv.reset(token)
            assert pc.current() is b and var.get() == "b"
        assert pc.current() is pc.host and var.get() == "host"
        assert var.of(a) == "a2" and var.of(b) == "b"
        assert not a.in_use and not b.in_use
    finally:
        a.close()
        b.close()


@pytest.mark.enabled_only
def test_a_third_party_resetting_to_no_value_means_the_host(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default="host")
    cv = current_var_of(pc)
    c = pc.Container()
    try:
        c.run(var.set, "c")
        with c:
            frame_of_c = contextvars.copy_context()[cv]

        def body() -> None:
            assert var.get() == "host"
            token = cv.set(frame_of_c)
            assert var.get() == "c" and pc.current() is c
            cv.reset(token)  # back to no value at all
            assert var.get() == "host" and pc.current() is pc.host

        contextvars.Context().run(body)
    finally:
        c.close()


@pytest.mark.enabled_only
@pytest.mark.parametrize("foreign", [12345, None, "frame", object()])
def test_a_value_of_the_wrong_type_raises_and_never_crashes(
        pc: ModuleType, name: str, foreign: Any) -> None:
    var = pc.PerContainer(name, default="host")
    typed = pc.PerContainer(name + ".typed", dtype="int64")
    cv = current_var_of(pc)
    c = pc.Container()
    try:
        c.run(var.set, "c")
        with c:
            token = cv.set(foreign)
            for read in (var.get, typed.get, pc.current, lambda: var.set("x"),
                         lambda: var.add("x"), lambda: typed.add(1), pc.Container):
                with pytest.raises(pc.ContainerError, match="outside percontainer"):
                    read()
            with pytest.raises(pc.ContainerError):
                c.__exit__(None, None, None)  # nothing changes
            cv.reset(token)
            assert var.get() == "c" and typed.get() == 0
        assert pc.current() is pc.host and not c.in_use
        assert var.of(c) == "c"
    finally:
        c.close()


@pytest.mark.enabled_only
def test_a_set_in_a_fresh_context_then_none(pc: ModuleType, name: str) -> None:
    """set(None) inside `with c:` and the token dropped: the frame dies, nothing crashes."""
    var = pc.PerContainer(name, default="host")
    cv = current_var_of(pc)
    c = pc.Container()

    def body() -> None:
        c.__enter__()
        cv.set(None)  # the token is dropped: c's frame is referenced by nothing
        gc.collect()
        with pytest.raises(pc.ContainerError):
            c.__exit__(None, None, None)
        with pytest.raises(pc.ContainerError):
            var.get()

    contextvars.Context().run(body)
    gc.collect()
    assert not c.in_use  # the entry died with its frame
    c.close()
    assert c.closed
    with pytest.raises(pc.ContainerClosedError):
        var.of(c)


@pytest.mark.enabled_only
def test_pytest_asyncio_style_propagation_across_loops(pc: ModuleType, name: str) -> None:
    """An async fixture's context changes are set into the test's context and reset at
    teardown (pytest-asyncio): afterwards the host is current again."""
    var = pc.PerContainer(name, default="host")
    cv = current_var_of(pc)
    acme = pc.Container("acme")
    try:
        acme.run(var.set, "acme")

        async def fixture() -> contextvars.Context:
            acme.__enter__()  # entered in the fixture's task, never left there
            return contextvars.copy_context()

        fixture_ctx = asyncio.run(fixture())
        tokens = [v.set(fixture_ctx[v]) for v in fixture_ctx if v is cv]
        assert var.get() == "acme" and pc.current() is acme
        for token in reversed(tokens):
            token.var.reset(token)
        assert var.get() == "host" and pc.current() is pc.host
        del fixture_ctx, tokens
        gc.collect()
        assert not acme.in_use  # the fixture's task is gone: its entry no longer counts
    finally:
        acme.close()


@pytest.mark.enabled_only
def test_contexts_switching_in_many_threads_never_cross(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default=None)
    cv = current_var_of(pc)
    tenants = [pc.Container(f"t{i}") for i in range(4)]
    try:
        for tenant in tenants:
            tenant.run(var.set, tenant.name)
        contexts = []
        for tenant in tenants:
            with tenant:
                contexts.append(contextvars.copy_context())

        def worker(i: int) -> None:
            mine = tenants[i]
            for step in range(2000):
                other = contexts[(i + step) % len(contexts)]
                with mine:
                    assert var.get() == mine.name
                    token = cv.set(other[cv])
                    assert var.get() == pc.current().name
                    cv.reset(token)
                    assert var.get() == mine.name
                assert pc.current() is pc.host

        with switch_often():
            run_threads([lambda i=i: worker(i) for i in range(4)])
    finally:
        for tenant in tenants:
            tenant.close()


# -- entries never left ---------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_an_entry_in_a_discarded_context_stops_counting(pc: ModuleType, name: str) -> None:
    hooks: list[Any] = []
    var = pc.PerContainer(name, default=None, on_exit=hooks.append)
    c = pc.Container()
    c.run(var.set, "made")
    ctx = contextvars.Context()
    ctx.run(c.__enter__)
    assert c.in_use
    c.close()
    assert hooks == []  # still inside, in ctx
    del ctx
    gc.collect()
    assert not c.in_use
    assert eventually(lambda: hooks == ["made"])  # at the next safe point, not in the gc pass
    assert c.closed


@pytest.mark.enabled_only
def test_a_task_that_never_leaves_does_not_block_teardown(pc: ModuleType, name: str) -> None:
    hooks: list[Any] = []
    var = pc.PerContainer(name, default=None, on_exit=hooks.append)
    c = pc.Container()

    async def never_leaves() -> None:
        c.__enter__()
        var.set("task")

    asyncio.run(never_leaves())
    gc.collect()
    assert not c.in_use
    c.close()
    assert hooks == ["task"]


@pytest.mark.enabled_only
def test_a_mis_nested_exit_changes_nothing(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default="host")
    a, b = pc.Container("a"), pc.Container("b")
    try:

        def gen(c: Any) -> Iterator[str]:
            with c:
                yield var.get()

        def body() -> None:
            g1, g2 = gen(a), gen(b)
            next(g1)
            next(g2)
            with pytest.raises(pc.ContainerError, match="nest"):
                g1.close()  # a is below b: leaving it now would drop b too
            assert pc.current() is b and a.in_use and b.in_use
            g2.close()
            assert pc.current() is a  # as before the failed exit

        contextvars.Context().run(body)  # the context (and its entry in a) is discarded
        gc.collect()
        assert not a.in_use and not b.in_use
    finally:
        a.close()
        b.close()


@pytest.mark.enabled_only
def test_leaving_a_frame_entered_by_a_factory_is_refused(pc: ModuleType, name: str) -> None:
    c = pc.Container()
    seen = []

    def factory() -> str:
        with pytest.raises(pc.ContainerError):
            c.__exit__(None, None, None)  # the factory did not enter c: nothing to leave
        seen.append(pc.current())
        return "made"

    var = pc.PerContainer(name, factory=factory)
    try:
        assert c.run(var.get) == "made" and seen == [c]
        assert not c.in_use and pc.current() is pc.host
    finally:
        c.close()


# -- coroutines -----------------------------------------------------------------------------------
@pytest.mark.enabled_only
def test_run_and_wrap_carry_the_container_into_a_coroutine(pc: ModuleType, name: str) -> None:
    var = pc.PerContainer(name, default="host")
    c = pc.Container()
    try:
        c.run(var.set, "c")

        async def read(suffix: str) -> str:
            await asyncio.sleep(0)
            return var.get() + suffix

        async def main() -> tuple[str, str, str, str]:
            first = await c.run(read, "!")
            wrapped = c.run(pc.wrap, read)
            second = await wrapped("?")
            async with c:
                await asyncio.sleep(0)
                third = var.get()
            return first, second, third, var.get()

        assert asyncio.run(main()) == ("c!", "c?", "c", "host")
        assert not c.in_use
    finally:
        c.close()


def test_async_with_a_closed_container_raises(pc: ModuleType) -> None:
    c = pc.Container()
    c.close()

    async def main() -> None:
        async with c:
            pass

    with pytest.raises(pc.ContainerClosedError):
        asyncio.run(main())


# -- parity ---------------------------------------------------------------------------------------
def test_containers_cannot_be_weakly_referenced_in_either_core(pc: ModuleType, name: str) -> None:
    """A weakref slot would cost every container 8 bytes: per-container state belongs in a
    PerContainer, which goes with the container when it closes."""
    c = pc.Container()
    try:
        with pytest.raises(TypeError):
            weakref.ref(c)
        state = pc.PerContainer(name, factory=dict)
        c.run(state.get)["tenant"] = Box("tenant state")
        assert state.of(c)["tenant"].payload == "tenant state"
    finally:
        c.close()


def test_enter_from_a_mapping_of_other_things_raises_type_error(pc: ModuleType) -> None:
    with pytest.raises(TypeError, match="Container"):
        pc.enter_from({"k": "not a container"}, "k")
    assert pc.current() is pc.host


@pytest.mark.c_extension
def test_the_compiled_core_reads_the_contextvar_cache_where_its_layout_is_known() -> None:
    """The mirror of CPython's ContextVar struct is checked at import; on the versions it is
    written for, a failed check (a wrong layout) would turn the fast reads off: fail then."""
    from percontainer import _core_c

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()  # free-threaded builds: no cache
    expected = (3, 10) <= sys.version_info[:2] <= (3, 13) and gil
    assert _core_c._reads_var_cache() is expected


# -- a WSGI body that holds a `with` across its yields, or never leaves --------------------------
def _serve(app: Any, key: str) -> tuple[bytes, Any]:
    """Call, iterate and close a WSGI body like a threaded server; return what it sent and
    what was current in the server's thread after it."""
    from percontainer import current

    environ = {"HTTP_HOST": key, "PATH_INFO": "/", "REQUEST_METHOD": "GET"}
    body = app(environ, lambda status, headers, exc_info=None: None)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return data, current()


def test_wsgi_bodies_that_misuse_with_never_leave_the_server_thread_inside(
        no_leftover_containers: None) -> None:
    import percontainer
    from percontainer import Container, host
    from percontainer.registry import TenantRegistry
    from percontainer.wsgi import TenantMiddleware

    other = Container("other")
    registry = TenantRegistry()
    try:

        def holds_with_across_yields(environ: Any, start_response: Any) -> Iterator[bytes]:
            start_response("200 OK", [])
            with other:
                yield percontainer.current().name.encode()
                yield b"|"
            yield percontainer.current().name.encode()

        def never_leaves(environ: Any, start_response: Any) -> Iterator[bytes]:
            start_response("200 OK", [])
            other.__enter__()
            yield percontainer.current().name.encode()

        app = TenantMiddleware(holds_with_across_yields, registry=registry)
        data, after = _serve(app, "acme")
        assert after is host
        if percontainer.ENABLED:
            assert data == b"other|acme"
        assert not other.in_use

        app = TenantMiddleware(never_leaves, registry=registry)
        data, after = _serve(app, "acme")
        assert after is host  # the entry stayed in the response's context, now gone
        gc.collect()
        assert not other.in_use
        other.close()
        assert other.closed and not other.in_use
    finally:
        registry.close()
        other.close()


# -- an interrupt (Ctrl-C) at any point of entering or leaving -----------------------------------
def _interrupt_at(code: Any, target: int) -> Any:
    """Return a trace function raising KeyboardInterrupt before opcode number `target` of
    `code` (counted over its run), and a list that records whether it fired."""
    fired: list[bool] = []
    seen = [0]

    def trace(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            seen[0] += 1
            if seen[0] == target and not fired:
                fired.append(True)
                raise KeyboardInterrupt
        return trace

    return trace, fired


@pytest.mark.enabled_only
@pytest.mark.parametrize("method", ["__enter__", "__exit__"])
def test_an_interrupt_anywhere_in_enter_or_exit_leaves_a_consistent_state(
        pc: ModuleType, method: str) -> None:
    """Wherever a KeyboardInterrupt lands in the twin's __enter__/__exit__ (the compiled
    core's run no bytecode), the state is one a caller can recover from: inside the container
    and counted (an interrupt before anything was done: leaving works), or outside and, once
    the frames of the interrupted call are gone, not counted; never inside but uncounted."""
    c = pc.Container()
    code = getattr(type(c), method).__code__ if pc.__name__.endswith("_py") else None
    try:
        for target in range(1, 400):
            trace, fired = _interrupt_at(code, target)

            def body() -> None:
                if method == "__exit__":
                    c.__enter__()
                sys.settrace(trace)
                try:
                    getattr(c, method)(None, None, None) if method == "__exit__" \
                        else c.__enter__()
                except KeyboardInterrupt:
                    pass
                finally:
                    sys.settrace(None)
                if pc.current() is c:  # entered (or not yet left): counted, and leaving works
                    assert c.in_use, (method, target)
                    c.__exit__(None, None, None)
                assert pc.current() is pc.host, (method, target)

            contextvars.copy_context().run(body)
            gc.collect()
            assert not c.in_use, (method, target)
            if not fired:
                break  # every opcode was tried
        else:
            raise AssertionError("the method never finished")
    finally:
        c.close()


@pytest.mark.enabled_only
def test_an_async_generator_advanced_from_another_task(pc: ModuleType, name: str) -> None:
    """Entered in one task, left from another: the exit raises and changes nothing, and the
    entry stops counting once its task's context is gone."""
    var = pc.PerContainer(name, default="host")
    c = pc.Container()
    errors: list[BaseException] = []

    async def inside() -> Any:
        async with c:
            yield var.get()
            yield var.get()

    async def main() -> None:
        gen = inside()
        assert await asyncio.create_task(gen.__anext__()) == "c"  # entered in that task
        assert pc.current() is pc.host  # never in this task

        async def finish() -> None:
            try:
                await gen.__anext__()
                await gen.__anext__()
            except pc.ContainerError as error:
                errors.append(error)
            except StopAsyncIteration:
                pass

        await asyncio.create_task(finish())
        assert pc.current() is pc.host

    try:
        c.run(var.set, "c")
        asyncio.run(main())
        gc.collect()
        assert len(errors) == 1 and "must nest" in str(errors[0])  # c is not current here
        assert not c.in_use
    finally:
        c.close()


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork()")
def test_a_lock_held_by_another_thread_at_fork_does_not_hang_the_child(
        make: Any, name: str) -> None:
    """Only the forking thread lives on in the child: a registry lock another thread held at
    fork() would never be released there."""
    import os
    import threading

    registry = make()
    registry.get("acme")
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with registry._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the registry works
        code = 1
        try:
            registry.get("beta")  # a new tenant: made under the lock
            code = 0
        finally:
            os._exit(code)
    release.set()
    thread.join(10)
    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        __import__("time").sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise AssertionError("the child hung on a lock held at fork()")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.enabled_only
def test_an_entry_discarded_in_another_thread_tears_its_closed_container_down(
        pc: ModuleType, name: str) -> None:
    """The teardown a discarded entry makes due runs once it is safe (on the teardown worker):
    its hooks run, in the container, exactly once."""
    hooks: list[Any] = []
    var = pc.PerContainer(name, default=None, on_exit=lambda v: hooks.append((v, pc.current())))
    c = pc.Container()
    c.run(var.set, "made")
    entered = threading.Event()

    def worker() -> None:
        ctx = contextvars.Context()
        ctx.run(c.__enter__)
        entered.set()
        c.close()  # waits for the entry
        assert hooks == []
        del ctx
        gc.collect()  # the entry goes with its context

    run_threads([worker])
    assert entered.is_set()
    gc.collect()
    assert not c.in_use

    def torn_down() -> bool:
        try:
            var.of(c)
        except pc.ContainerClosedError:  # the values are gone: the teardown is over
            return True
        return False

    assert eventually(torn_down)
    assert hooks == [("made", c)]


# -- a gc pass inside the library's own ContextVar resets -------------------------------------------
@contextmanager
def gc_pass_reading(read: Callable[[], object]) -> Iterator[list[object]]:
    """A gc pass at nearly every allocation, each calling read() (as a gc callback or a
    finalizer may): inside a ContextVar.reset() too, whose HAMT work allocates."""
    seen: list[object] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start" and len(seen) < 100_000:
            seen.append(read())

    old = gc.get_threshold()
    gc.callbacks.append(callback)
    gc.set_threshold(1)
    try:
        yield seen
    finally:
        gc.set_threshold(*old)
        gc.callbacks.remove(callback)


def _padded_context() -> contextvars.Context:
    """A context holding enough other vars that a reset must rebuild HAMT nodes (allocate)."""
    ctx = contextvars.Context()
    for pad in _PADS:
        ctx.run(pad.set, object())
    return ctx


_PADS = [contextvars.ContextVar(f"pad{i}") for i in range(40)]


@pytest.mark.enabled_only
def test_a_read_in_a_gc_pass_inside_the_outermost_exit_caches_nothing_stale(
        pc: ModuleType, name: str) -> None:
    """CPython 3.10/3.11's reset to no value clears the var's cache before its HAMT work; a
    read there caches the frame being removed. After the exit the host must be current."""
    var = pc.PerContainer(name, default="host")
    c = pc.Container("c")
    c.run(var.set, "c")
    wrong: list[str] = []

    def body() -> None:
        with c:
            assert var.get() == "c"
        if pc.current() is not pc.host or var.get() != "host":
            wrong.append(f"after the exit: {pc.current()!r}, {var.get()!r}")

    try:
        with gc_pass_reading(pc.current) as seen:
            for _ in range(300):
                _padded_context().run(body)
        assert seen, "no gc pass ran"
        assert wrong == []
    finally:
        c.close()


@pytest.mark.enabled_only
def test_a_read_in_a_gc_pass_inside_a_factory_s_exit_caches_nothing_stale(
        pc: ModuleType, name: str) -> None:
    """The same for a factory's frame (entered by no `with`), reset to no value when the
    factory returns."""
    made = pc.PerContainer(name + ".made", factory=lambda: pc.current().name)
    plain = pc.PerContainer(name + ".plain", default="host")
    containers = [pc.Container(f"c{i}") for i in range(300)]
    wrong: list[str] = []

    def body(c: Any) -> None:
        assert made.of(c) == c.name  # the factory runs inside c, from the host
        if pc.current() is not pc.host or plain.get() != "host":
            wrong.append(f"after the factory: {pc.current()!r}")

    try:
        with gc_pass_reading(lambda: (pc.current(), plain.get())) as seen:
            for c in containers:
                _padded_context().run(body, c)
        assert seen, "no gc pass ran"
        assert wrong == []
    finally:
        for c in containers:
            c.close()


@pytest.mark.enabled_only
def test_a_discarded_entry_s_failing_hook_is_reported_and_the_worker_goes_on(
        pc: ModuleType, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The teardown worker reports what a hook raised to sys.unraisablehook, and tears the
    next discarded entry's container down all the same."""
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    ran: list[str] = []

    def hook(value: str) -> None:
        ran.append(value)
        if value == "first":
            raise LookupError("the hook failed")

    var = pc.PerContainer(name, default=None, on_exit=hook)
    for value in ("first", "second"):
        c = pc.Container(value)
        c.run(var.set, value)
        ctx = contextvars.Context()
        ctx.run(c.__enter__)
        c.close()  # waits for the entry in ctx
        del ctx
        gc.collect()
        assert eventually(lambda: value in ran)
    assert ran == ["first", "second"]
    assert eventually(lambda: len(reported) == 1)
    assert isinstance(reported[0].exc_value, LookupError)
