"""The ASGI and WSGI TenantMiddleware, driven in-process with real ASGI calls / WSGI environs.

They use the top-level core; assertions about which container code runs in are skipped with
PERCONTAINER_DISABLE=1 (current() is then always the host), the routing ones are not.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

import percontainer
from percontainer import Container, ContainerError, PerContainer, current, host
from percontainer import asgi, wsgi
from percontainer.registry import TenantRegistry

ENABLED = percontainer.ENABLED
enabled_only = pytest.mark.skipif(
    not ENABLED, reason="asserts isolation; PERCONTAINER_DISABLE=1 is set")


pytestmark = pytest.mark.usefixtures("no_leftover_containers")




@pytest.fixture
def reg(make: Callable[..., TenantRegistry]) -> TenantRegistry:
    return make()


def custom_reject(status: int, reason: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return 418, [("x-why", str(status))], f"nope {status}: {reason}".encode()


GOOD_HOSTS = [
    ("acme.example", "acme.example"),
    ("ACME.example:8000", "acme.example"),
    ("Acme.Example", "acme.example"),
    (" acme.example ", "acme.example"),
    ("localhost", "localhost"),
    ("127.0.0.1:80", "127.0.0.1"),
    ("a-b.c-d.example", "a-b.c-d.example"),
    ("acme.example:65535", "acme.example"),
    ("[::1]:8000", "[::1]"),  # an IPv6 literal keeps its brackets, as in a URL
    ("[::1]", "[::1]"),
    ("[2001:DB8::1]:443", "[2001:db8::1]"),
    ("[::ffff:192.0.2.1]", "[::ffff:192.0.2.1]"),
]

BAD_HOSTS = [
    None,  # no Host header at all
    "",
    "   ",
    "acme..example",
    ".acme.example",
    "acme.example.:80",
    "-acme.example",
    "acme-.example",
    "acme example",
    "acme.example:",
    "acme.example:port",
    "acme.example:123456",
    "acme.example:65536",
    "::1",  # an IPv6 address without its brackets
    "[::1",
    "::1]",
    "[::1]:",
    "[::1]:port",
    "[::1]]:80",
    "[]",
    "[:::]",
    "[1::2::3]",
    "[12345::1]",
    "[fe80::1%25eth0]",  # a zone id: never sent in a Host header
    "[v1.future]",
    "[acme.example]",
    "user@acme.example",
    "acme.example/path",
    "a" * 64 + ".example",  # a label longer than 63
    ("a" * 60 + ".") * 5,  # over 260 characters
]


# ==============================================================================================
# ASGI
# ==============================================================================================
def http_scope(host_header: str | None = "acme.example", path: str = "/",
               headers: list[tuple[bytes, bytes]] | None = None,
               kind: str = "http") -> dict[str, Any]:
    all_headers = list(headers or [])
    if host_header is not None:
        all_headers.insert(0, (b"host", host_header.encode("latin-1")))
    scope: dict[str, Any] = {
        "type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
        "scheme": "http" if kind == "http" else "ws", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": all_headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    if kind == "http":
        scope["method"] = "GET"
    return scope


async def call_asgi(app: Any, scope: dict[str, Any], body: bytes = b"") -> list[dict[str, Any]]:
    """Run one ASGI call; return the messages the app sent."""
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if scope["type"] == "websocket":
            if first:
                first = False
                return {"type": "websocket.connect"}
            return {"type": "websocket.disconnect", "code": 1000}
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def status_of(messages: list[dict[str, Any]]) -> int:
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1, messages
    return int(starts[0]["status"])


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


class EchoApp:
    """Answers with the name of the container it runs in; records every call."""

    def __init__(self) -> None:
        self.calls: list[Container] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(current())
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": str(current().name)})
            await send({"type": "websocket.close", "code": 1000})
            return
        body = str(current().name).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(("header", "key"), GOOD_HOSTS)
def test_asgi_host_routing(reg: TenantRegistry, header: str, key: str) -> None:
    app = EchoApp()
    messages = asyncio.run(call_asgi(asgi.TenantMiddleware(app, registry=reg),
                                     http_scope(header)))
    assert status_of(messages) == 200
    assert reg.keys() == [key]
    assert len(app.calls) == 1
    if ENABLED:
        assert app.calls[0] is reg.get(key)
        assert body_of(messages) == key.encode()


def test_asgi_host_key_function() -> None:
    assert asgi.host_key(http_scope("ACME.example:8000")) == "acme.example"
    assert asgi.host_key(http_scope(None, headers=[(b"HOST", b"Big.Example")])) == "big.example"
    assert asgi.host_key(http_scope(None)) is None
    assert asgi.host_key(http_scope("[::1]:8000")) == "[::1]"
    assert asgi.host_key(http_scope(None, headers=[(b"host", bytearray(b"[::1]"))])) == "[::1]"


@pytest.mark.parametrize("header", BAD_HOSTS)
def test_asgi_bad_host_is_400(reg: TenantRegistry, header: str | None) -> None:
    app = EchoApp()
    messages = asyncio.run(call_asgi(asgi.TenantMiddleware(app, registry=reg),
                                     http_scope(header)))
    assert status_of(messages) == 400
    assert body_of(messages).startswith(b"400")
    assert app.calls == []
    assert reg.keys() == []


def test_asgi_unknown_tenant_is_404(make: Callable[..., TenantRegistry]) -> None:
    reg = make(auto_create=False)
    app = EchoApp()
    middleware = asgi.TenantMiddleware(app, registry=reg)
    messages = asyncio.run(call_asgi(middleware, http_scope("acme.example")))
    assert status_of(messages) == 404
    assert b"acme.example" in body_of(messages)
    assert app.calls == [] and reg.keys() == []
    created = reg.create("acme.example")
    messages = asyncio.run(call_asgi(middleware, http_scope("ACME.example:1")))
    assert status_of(messages) == 200
    assert len(app.calls) == 1
    if ENABLED:
        assert app.calls[0] is created


def test_asgi_custom_reject(make: Callable[..., TenantRegistry]) -> None:
    app = EchoApp()
    middleware = asgi.TenantMiddleware(app, registry=make(auto_create=False),
                                       reject=custom_reject)
    for scope, status in ((http_scope(None), 400), (http_scope("acme.example"), 404)):
        messages = asyncio.run(call_asgi(middleware, scope))
        assert status_of(messages) == 418
        start = messages[0]
        assert (b"x-why", str(status).encode()) in start["headers"]
        assert body_of(messages).startswith(f"nope {status}: ".encode())
    assert app.calls == []


def test_asgi_path_prefix_key(reg: TenantRegistry) -> None:
    app = EchoApp()
    middleware = asgi.TenantMiddleware(app, key=asgi.path_prefix_key, registry=reg)
    messages = asyncio.run(call_asgi(middleware, http_scope(None, path="/acme/orders/1")))
    assert status_of(messages) == 200
    assert reg.keys() == ["acme"]
    if ENABLED:
        assert body_of(messages) == b"acme"
    for path in ("/", "", "//"):
        messages = asyncio.run(call_asgi(middleware, http_scope("other.example", path=path)))
        assert status_of(messages) == 400
    assert len(app.calls) == 1 and reg.keys() == ["acme"]


def test_asgi_header_key(reg: TenantRegistry) -> None:
    app = EchoApp()
    middleware = asgi.TenantMiddleware(app, key=asgi.header_key("X-Tenant"), registry=reg)
    scope = http_scope("ignored.example", headers=[(b"x-tenant", b" Acme ")])
    messages = asyncio.run(call_asgi(middleware, scope))
    assert status_of(messages) == 200
    assert reg.keys() == ["Acme"]  # a header key is taken as is (stripped), not case-folded
    if ENABLED:
        assert body_of(messages) == b"Acme"
    for headers in ([], [(b"x-tenant", b"")], [(b"x-tenant", b"   ")], [(b"x-other", b"a")]):
        messages = asyncio.run(call_asgi(middleware, http_scope("acme.example", headers=headers)))
        assert status_of(messages) == 400
    assert len(app.calls) == 1


def test_asgi_lifespan_runs_in_the_host(reg: TenantRegistry) -> None:
    seen: list[Container] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        seen.append(current())
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        seen.append(current())
        await send({"type": "lifespan.shutdown.complete"})

    middleware = asgi.TenantMiddleware(app, registry=reg)
    messages_in = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages_in.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main(caller: Container) -> Container:
        with caller:  # whatever the server runs in, lifespan runs in the host
            await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
            return current()

    caller = Container("caller")
    try:
        after = asyncio.run(main(caller))
    finally:
        caller.close()
    assert seen == [host, host]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete",
                                         "lifespan.shutdown.complete"]
    assert reg.keys() == []
    if ENABLED:
        assert after is caller  # the middleware gave the caller's container back


def test_asgi_websocket(make: Callable[..., TenantRegistry]) -> None:
    reg = make(auto_create=False)
    reg.create("acme.example")
    app = EchoApp()
    middleware = asgi.TenantMiddleware(app, registry=reg)
    for scope in (http_scope(None, kind="websocket"), http_scope("bad host", kind="websocket"),
                  http_scope("unknown.example", kind="websocket")):
        messages = asyncio.run(call_asgi(middleware, scope))
        assert len(messages) == 1
        assert messages[0]["type"] == "websocket.close"
        assert messages[0]["code"] == 1008
        assert isinstance(messages[0].get("reason", ""), str)
    assert app.calls == []
    messages = asyncio.run(call_asgi(middleware, http_scope("acme.example", kind="websocket")))
    assert [m["type"] for m in messages] == ["websocket.accept", "websocket.send",
                                             "websocket.close"]
    if ENABLED:
        assert messages[1]["text"] == "acme.example"
        assert app.calls == [reg.get("acme.example")]


def test_asgi_streaming_many_concurrent_requests(reg: TenantRegistry, name: str) -> None:
    """200 concurrent streaming requests for 20 tenants: every chunk made in the right tenant."""
    hits = PerContainer(f"{name}.hits", default=0)
    tenants, requests = 20, 200

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        hits.add(1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in range(3):
            await asyncio.sleep(0)  # the other requests run here
            await send({"type": "http.response.body", "more_body": part < 2,
                        "body": f"{current().name}:{part}\n".encode()})

    middleware = asgi.TenantMiddleware(app, registry=reg)

    async def main() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(
            call_asgi(middleware, http_scope(f"t{i % tenants}.example"))
            for i in range(requests)))

    results = asyncio.run(main())
    assert current() is host
    assert sorted(reg.keys()) == sorted(f"t{i}.example" for i in range(tenants))
    for i, messages in enumerate(results):
        assert status_of(messages) == 200
        assert len([m for m in messages if m["type"] == "http.response.body"]) == 3
        if ENABLED:
            tenant = f"t{i % tenants}.example"
            assert body_of(messages) == "".join(f"{tenant}:{p}\n" for p in range(3)).encode()
    if ENABLED:
        assert {c.name: value for c, value in hits.items()} == {
            f"t{i}.example": requests // tenants for i in range(tenants)}
    else:
        assert hits.get() == requests


@enabled_only
def test_asgi_tasks_spawned_by_the_app_see_the_tenant(reg: TenantRegistry) -> None:
    seen: list[tuple[str, str | None]] = []

    async def background(tenant_header: str) -> None:
        await asyncio.sleep(0)
        seen.append((tenant_header, current().name))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        header = dict(scope["headers"])[b"host"].decode()
        task = asyncio.create_task(background(header))
        await asyncio.sleep(0)
        await task
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = asgi.TenantMiddleware(app, registry=reg)

    async def main() -> None:
        await asyncio.gather(*(call_asgi(middleware, http_scope(f"t{i % 5}.example"))
                               for i in range(25)))

    asyncio.run(main())
    assert len(seen) == 25
    assert all(header == name for header, name in seen)


def test_asgi_app_exception_propagates_and_unpins(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/fail":
            raise KeyError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = asgi.TenantMiddleware(app, registry=reg)

    async def main() -> Container:
        with pytest.raises(KeyError, match="boom"):
            await call_asgi(middleware, http_scope("a.example", path="/fail"))
        return current()

    assert asyncio.run(main()) is host
    a = reg.get("a.example")
    asyncio.run(call_asgi(middleware, http_scope("b.example")))
    assert reg.keys() == ["b.example"]
    assert a.closed  # a was unpinned by the failed request, so it could be evicted


def test_asgi_tenant_pinned_while_request_in_flight(make: Callable[..., TenantRegistry],
                                                    name: str) -> None:
    value = PerContainer(f"{name}.value", default=None)
    reg = make(max_tenants=1)
    gate = asyncio.Event()  # binds to the loop that first waits on it

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            value.set("slow")
            await gate.wait()
            body = f"{current().name}:{value.get()}".encode()
        else:
            value.set("fast")
            body = b"fast"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    middleware = asgi.TenantMiddleware(app, registry=reg)

    async def main() -> list[dict[str, Any]]:
        slow = asyncio.create_task(call_asgi(middleware, http_scope("a.example", path="/slow")))
        await asyncio.sleep(0)
        a = reg.get("a.example")
        for i in range(10):
            await call_asgi(middleware, http_scope(f"k{i}.example"))
            assert "a.example" in reg and not a.closed
        assert len(reg) == 2  # a (busy) and the last k
        gate.set()
        return await slow

    messages = asyncio.run(main())
    assert status_of(messages) == 200
    if ENABLED:
        assert body_of(messages) == b"a.example:slow"


def test_asgi_closed_registry_raises(reg: TenantRegistry) -> None:
    app = EchoApp()
    middleware = asgi.TenantMiddleware(app, registry=reg)
    reg.close()
    with pytest.raises(ContainerError):
        asyncio.run(call_asgi(middleware, http_scope("acme.example")))
    assert app.calls == []


def test_asgi_default_registry() -> None:
    middleware = asgi.TenantMiddleware(EchoApp())
    try:
        assert isinstance(middleware.registry, TenantRegistry)
        messages = asyncio.run(call_asgi(middleware, http_scope("acme.example")))
        assert status_of(messages) == 200
        assert middleware.registry.keys() == ["acme.example"]
    finally:
        middleware.registry.close()


# ==============================================================================================
# WSGI
# ==============================================================================================
def environ_for(host_header: str | None = "acme.example", path: str = "/",
                **extra: Any) -> dict[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    if host_header is None:
        environ.pop("HTTP_HOST", None)
    else:
        environ["HTTP_HOST"] = host_header
    environ.update(extra)
    return environ


class StartResponse:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: Any = None) -> Callable[[bytes], None]:
        self.calls.append((status, headers))
        return lambda data: None

    @property
    def status(self) -> int:
        assert len(self.calls) == 1, self.calls
        return int(self.calls[0][0].split()[0])


def run_wsgi(app: Any, environ: dict[str, Any]) -> tuple[StartResponse, bytes]:
    """Call, iterate and close the body, like a server."""
    start = StartResponse()
    body = app(environ, start)
    try:
        data = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return start, data


def echo_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ.setdefault("test.calls", []).append(current())
    start_response("200 OK", [("content-type", "text/plain")])
    return [str(current().name).encode()]


@pytest.mark.parametrize(("header", "key"), GOOD_HOSTS)
def test_wsgi_host_routing(reg: TenantRegistry, header: str, key: str) -> None:
    calls: list[Container] = []
    environ = environ_for(header, **{"test.calls": calls})
    start, data = run_wsgi(wsgi.TenantMiddleware(echo_wsgi, registry=reg), environ)
    assert start.status == 200
    assert reg.keys() == [key]
    assert len(calls) == 1
    if ENABLED:
        assert calls[0] is reg.get(key)
        assert data == key.encode()


def test_wsgi_host_key_function() -> None:
    assert wsgi.host_key(environ_for("ACME.example:8000")) == "acme.example"
    assert wsgi.host_key(environ_for("[::1]:8000")) == "[::1]"
    assert wsgi.host_key(environ_for(None)) is None


@pytest.mark.parametrize("header", BAD_HOSTS)
def test_wsgi_bad_host_is_400(reg: TenantRegistry, header: str | None) -> None:
    calls: list[Container] = []
    environ = environ_for(header, **{"test.calls": calls})
    start, data = run_wsgi(wsgi.TenantMiddleware(echo_wsgi, registry=reg), environ)
    assert start.status == 400
    assert start.calls[0][0] == "400 Bad Request"
    assert data.startswith(b"400")
    assert calls == [] and reg.keys() == []


def test_wsgi_unknown_tenant_is_404(make: Callable[..., TenantRegistry]) -> None:
    reg = make(auto_create=False)
    calls: list[Container] = []
    middleware = wsgi.TenantMiddleware(echo_wsgi, registry=reg)
    start, data = run_wsgi(middleware, environ_for("acme.example", **{"test.calls": calls}))
    assert start.calls[0][0] == "404 Not Found"
    assert b"acme.example" in data
    assert calls == [] and reg.keys() == []
    created = reg.create("acme.example")
    start, data = run_wsgi(middleware, environ_for("Acme.Example:80", **{"test.calls": calls}))
    assert start.status == 200
    if ENABLED:
        assert calls == [created]


def test_wsgi_custom_reject(make: Callable[..., TenantRegistry]) -> None:
    calls: list[Container] = []
    middleware = wsgi.TenantMiddleware(echo_wsgi, registry=make(auto_create=False),
                                       reject=custom_reject)
    for host_header, status in ((None, 400), ("acme.example", 404)):
        start, data = run_wsgi(middleware, environ_for(host_header, **{"test.calls": calls}))
        assert start.status == 418
        assert ("x-why", str(status)) in start.calls[0][1]
        assert data.startswith(f"nope {status}: ".encode())
    assert calls == []


def test_wsgi_path_prefix_and_header_keys(reg: TenantRegistry) -> None:
    by_path = wsgi.TenantMiddleware(echo_wsgi, key=wsgi.path_prefix_key, registry=reg)
    start, data = run_wsgi(by_path, environ_for(None, path="/acme/orders"))
    assert start.status == 200 and reg.keys() == ["acme"]
    if ENABLED:
        assert data == b"acme"
    start, _ = run_wsgi(by_path, environ_for("acme.example", path="/"))
    assert start.status == 400

    by_header = wsgi.TenantMiddleware(echo_wsgi, key=wsgi.header_key("X-Tenant"), registry=reg)
    start, data = run_wsgi(by_header, environ_for("ignored.example", HTTP_X_TENANT=" beta "))
    assert start.status == 200 and "beta" in reg
    if ENABLED:
        assert data == b"beta"
    for extra in ({}, {"HTTP_X_TENANT": ""}, {"HTTP_X_TENANT": "  "}):
        start, _ = run_wsgi(by_header, environ_for("acme.example", **extra))
        assert start.status == 400
    assert sorted(reg.keys()) == ["acme", "beta"]


class StreamApp:
    """A WSGI app whose body is a generator: it records where each step runs."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.steps: list[tuple[str, str | None]] = []
        self.fail_at = fail_at

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        self.steps.append(("call", current().name))
        start_response("200 OK", [("content-type", "text/plain")])
        return self.body()

    def body(self) -> Iterator[bytes]:
        try:
            for part in range(3):
                if part == self.fail_at:
                    raise ValueError("failed while streaming")
                self.steps.append((f"chunk{part}", current().name))
                yield f"{current().name}:{part}\n".encode()
        finally:
            self.steps.append(("close", current().name))


def test_wsgi_generator_body_runs_in_the_tenant(reg: TenantRegistry) -> None:
    app = StreamApp()
    start, data = run_wsgi(wsgi.TenantMiddleware(app, registry=reg), environ_for("a.example"))
    assert start.status == 200
    assert [step for step, _ in app.steps] == ["call", "chunk0", "chunk1", "chunk2", "close"]
    if ENABLED:
        assert data == b"a.example:0\na.example:1\na.example:2\n"
        assert all(where == "a.example" for _, where in app.steps)
    assert current() is host


def test_wsgi_body_iterated_in_another_thread(reg: TenantRegistry) -> None:
    app = StreamApp()
    start = StartResponse()
    body = wsgi.TenantMiddleware(app, registry=reg)(environ_for("a.example"), start)
    chunks: list[bytes] = []
    outside: list[Container] = []

    def server_thread() -> None:
        try:
            for chunk in body:
                chunks.append(chunk)
                outside.append(current())  # between chunks: not in the tenant
        finally:
            body.close()  # type: ignore[attr-defined]
        outside.append(current())

    thread = threading.Thread(target=server_thread, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    assert len(chunks) == 3
    assert outside == [host] * 4
    assert [step for step, _ in app.steps] == ["call", "chunk0", "chunk1", "chunk2", "close"]
    if ENABLED:
        assert b"".join(chunks) == b"a.example:0\na.example:1\na.example:2\n"
        assert all(where == "a.example" for _, where in app.steps)


class ClosingBody:
    """A response body (not a generator) with its own close(), as PEP 3333 allows."""

    def __init__(self, log: list[tuple[str, str | None]]) -> None:
        self.log = log

    def __iter__(self) -> Iterator[bytes]:
        for part in range(3):
            self.log.append((f"chunk{part}", current().name))
            yield f"{current().name}:{part}\n".encode()

    def close(self) -> None:
        self.log.append(("close", current().name))


def test_wsgi_tenant_pinned_until_body_closed(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)
    log: list[tuple[str, str | None]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return ClosingBody(log) if environ["PATH_INFO"] == "/stream" else [b"ok"]

    middleware = wsgi.TenantMiddleware(app, registry=reg)
    body = middleware(environ_for("a.example", path="/stream"), StartResponse())
    a = reg.get("a.example")
    first = next(iter(body))
    for i in range(5):  # other tenants come and go
        other_start, _ = run_wsgi(middleware, environ_for(f"k{i}.example"))
        assert other_start.status == 200
        assert "a.example" in reg and not a.closed
    rest = list(body)  # the body is exhausted, but the server has not closed it yet
    run_wsgi(middleware, environ_for("late.example"))
    assert "a.example" in reg and not a.closed
    assert [step for step, _ in log] == ["chunk0", "chunk1", "chunk2"]
    body.close()  # type: ignore[attr-defined]
    assert [step for step, _ in log] == ["chunk0", "chunk1", "chunk2", "close"]
    if ENABLED:
        assert all(where == "a.example" for _, where in log)  # close() ran in the tenant too
        assert first + b"".join(rest) == b"a.example:0\na.example:1\na.example:2\n"
    run_wsgi(middleware, environ_for("z.example"))
    assert a.closed and reg.keys() == ["z.example"]


def test_wsgi_unclosed_generator_closed_in_the_tenant(make: Callable[..., TenantRegistry]) -> None:
    """The server closes a body it stopped reading early: the generator's finally runs inside."""
    reg = make(max_tenants=1)
    app = StreamApp()
    middleware = wsgi.TenantMiddleware(app, registry=reg)
    body = middleware(environ_for("a.example"), StartResponse())
    next(iter(body))
    run_wsgi(wsgi.TenantMiddleware(echo_wsgi, registry=reg), environ_for("b.example"))
    assert "a.example" in reg
    body.close()  # type: ignore[attr-defined]
    assert [step for step, _ in app.steps] == ["call", "chunk0", "close"]
    if ENABLED:
        assert all(where == "a.example" for _, where in app.steps)
    # a's request ended last (at close()), so b is the least recently used.
    assert reg.evict_idle() == 1 and reg.keys() == ["a.example"]


def test_wsgi_close_is_idempotent(make: Callable[..., TenantRegistry]) -> None:
    """Closing one body twice must not unpin the tenant twice (another body still holds it)."""
    reg = make(max_tenants=1)
    middleware = wsgi.TenantMiddleware(StreamApp(), registry=reg)
    body1 = middleware(environ_for("a.example"), StartResponse())
    body2 = middleware(environ_for("a.example"), StartResponse())
    a = reg.get("a.example")
    list(body1)
    body1.close()  # type: ignore[attr-defined]
    body1.close()  # type: ignore[attr-defined]
    run_wsgi(middleware, environ_for("b.example"))
    assert "a.example" in reg and not a.closed  # body2 still in flight
    list(body2)
    body2.close()  # type: ignore[attr-defined]
    run_wsgi(middleware, environ_for("c.example"))
    assert a.closed and reg.keys() == ["c.example"]


def test_wsgi_close_of_a_plain_iterable(reg: TenantRegistry) -> None:
    closed_in: list[str | None] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield str(current().name).encode()

        def close(self) -> None:
            closed_in.append(current().name)

    def app(environ: dict[str, Any], start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    start, data = run_wsgi(wsgi.TenantMiddleware(app, registry=reg), environ_for("a.example"))
    assert start.status == 200 and len(closed_in) == 1
    if ENABLED:
        assert data == b"a.example" and closed_in == ["a.example"]


def test_wsgi_app_exception_unpins(make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/fail":
            raise KeyError("boom")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = wsgi.TenantMiddleware(app, registry=reg)
    with pytest.raises(KeyError, match="boom"):
        middleware(environ_for("a.example", path="/fail"), StartResponse())
    assert current() is host
    a = reg.get("a.example")
    run_wsgi(middleware, environ_for("b.example"))
    assert a.closed and reg.keys() == ["b.example"]


def test_wsgi_exception_while_streaming_unpins_on_close(
        make: Callable[..., TenantRegistry]) -> None:
    reg = make(max_tenants=1)
    app = StreamApp(fail_at=1)
    middleware = wsgi.TenantMiddleware(app, registry=reg)
    body = middleware(environ_for("a.example"), StartResponse())
    a = reg.get("a.example")
    with pytest.raises(ValueError, match="failed while streaming"):
        try:
            for _ in body:
                pass
        finally:
            body.close()  # type: ignore[attr-defined]  # a server always closes the body
    assert current() is host
    app.fail_at = None
    run_wsgi(middleware, environ_for("b.example"))
    assert a.closed and reg.keys() == ["b.example"]


def test_wsgi_evict_during_streaming_lets_the_body_finish(
        make: Callable[..., TenantRegistry]) -> None:
    """evict(key) documents that requests in flight finish inside the evicted container.

    A WSGI request is in flight until the server closes its body, so the remaining chunks and
    close() must still run inside the tenant (as they do under ASGI, where the request keeps
    the container entered)."""
    reg = make()
    app = StreamApp()
    middleware = wsgi.TenantMiddleware(app, registry=reg)
    body = middleware(environ_for("a.example"), StartResponse())
    chunks = [next(iter(body))]
    assert reg.evict("a.example")
    try:
        chunks.extend(body)  # got: ContainerClosedError "cannot enter closed <Container ...>"
    finally:
        body.close()  # type: ignore[attr-defined]
    assert len(chunks) == 3
    assert [step for step, _ in app.steps] == ["call", "chunk0", "chunk1", "chunk2", "close"]
    if ENABLED:
        assert b"".join(chunks) == b"a.example:0\na.example:1\na.example:2\n"
        assert all(where == "a.example" for _, where in app.steps)


def test_wsgi_default_registry() -> None:
    middleware = wsgi.TenantMiddleware(echo_wsgi)
    try:
        start, _ = run_wsgi(middleware, environ_for("acme.example"))
        assert start.status == 200
        assert middleware.registry.keys() == ["acme.example"]
    finally:
        middleware.registry.close()
