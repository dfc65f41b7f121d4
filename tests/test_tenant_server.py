"""The example server under load, for real: uvicorn (ASGI) and waitress (WSGI, threaded) on
127.0.0.1, driven by httpx from 64 threads over 64 connections, 20,000 requests over 100
tenants. (Threads and a sync client: httpx's async client took three times as long for the
same requests, so on a shared machine the test timed the client rather than the server.)

Every response must name the tenant it was sent for (streamed chunks included), every
per-tenant counter must equal the requests sent to that tenant, and no request may be lost.
A busy machine is not a server error: a connection-level failure (refused, reset, closed
without an answer, timed out) is retried with backoff and counted; only a wrong answer, an
error status, or a request still failing after its retries fails the test. A retry may repeat
a request the server had already counted, so each tenant's counter may exceed what it was
sent by at most that tenant's retries of counting requests (0 when nothing was retried).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import importlib
import itertools
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from percontainer import _config

httpx = pytest.importorskip("httpx")

isolating = pytest.mark.skipif(_config.DISABLED,
                               reason="asserts isolation; PERCONTAINER_DISABLE=1 is set")

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 20_000
TENANTS = 100
CONCURRENCY = 64
STREAM_EVERY = 20  # one round of requests over the tenants in 20 asks for streamed bodies
DEADLINE = 240.0  # seconds for the whole load, far above what it takes
ATTEMPTS = 8  # tries per request; the waits between them add up to 6 s at most
TIMEOUT = httpx.Timeout(30.0, connect=10.0)

# Connection-level failures: the machine or the network, not the app's answer. Of these,
# a request that failed to connect (or to get a pooled connection) never reached the server.
RETRIED = (httpx.TransportError,)
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
NOT_RETRIED = (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.ProxyError)


@contextmanager
def serving(kind: str) -> Iterator[str]:
    """Start `python -m examples.tenant_server KIND --port 0` and yield its base URL once it
    answers; stop it by its PID, and fail if it printed a traceback."""
    with tempfile.TemporaryDirectory() as scratch:
        out_path, err_path = Path(scratch, "stdout"), Path(scratch, "stderr")
        with out_path.open("wb") as out, err_path.open("wb") as err:  # a file never fills up
            server = subprocess.Popen(
                [sys.executable, "-m", "examples.tenant_server", kind, "--port", "0"],
                cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out, stderr=err)
        try:
            yield _wait_until_served(kind, server, out_path, err_path)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        errors = err_path.read_text(errors="replace")
    assert "Traceback" not in errors, errors[-3000:]


def _wait_until_served(kind: str, server: subprocess.Popen[bytes], out_path: Path,
                       err_path: Path) -> str:
    """Return the URL the server printed, once a request to it is answered."""
    started = time.monotonic()
    base = None
    while True:
        if base is None:
            printed = re.search(rf"serving {kind.upper()} \(.*\) on (http://\S+)",
                                out_path.read_text())
            base = printed.group(1) if printed else None
        if base is not None:
            try:
                with httpx.Client(base_url=base, timeout=5) as client:
                    if client.get("/", headers={"host": "probe.example"}).status_code == 200:
                        return base
            except httpx.TransportError:
                pass
        if server.poll() is not None or time.monotonic() - started > 60:
            raise RuntimeError(f"the {kind} server did not start (printed "
                               f"{out_path.read_text()!r}): {err_path.read_text()}")
        time.sleep(0.05)


def tenant_of(i: int) -> str:
    return f"tenant{i % TENANTS}.example"


def path_of(i: int) -> str:
    return "/stream" if (i // TENANTS) % STREAM_EVERY == 0 else "/hit"


def backoff(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): doubling from 50 ms, jittered."""
    return min(0.05 * 2 ** (attempt - 1), 3.0) * random.uniform(0.5, 1.0)


class Tally:
    """What the responses said, per tenant, and what had to be retried (thread-safe)."""

    _lock = threading.Lock()  # `counter[key] += 1` from many threads loses updates

    def __init__(self, requests: int = REQUESTS) -> None:
        self.requests = requests
        self.sent: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.counts: dict[str, list[int]] = {}
        self.retries: Counter[str] = Counter()  # by exception type
        self.maybe_counted: Counter[str] = Counter()  # per tenant: retries that may repeat a hit
        self.problems: list[str] = []

    def failed(self, tenant: str, path: str, error: Exception) -> None:
        """Note a connection-level failure about to be retried."""
        with self._lock:
            self.retries[type(error).__name__] += 1
            if path == "/hit" and not isinstance(error, NOT_SENT):
                self.maybe_counted[tenant] += 1

    def lost(self, tenant: str, path: str, error: Exception) -> None:
        """Note a request that got no answer."""
        with self._lock:
            self.sent[tenant] += 1
            self.problems.append(f"{tenant} {path}: no answer after {ATTEMPTS} tries: {error!r}")

    def record(self, tenant: str, path: str, response: Any) -> None:
        """Note an answer, and whether it is the right one."""
        status, text = response.status_code, response.text
        data = response.json() if status == 200 and path != "/stream" else {}
        with self._lock:
            self.sent[tenant] += 1
            if path == "/hit":
                self.hits[tenant] += 1
            if status != 200:
                self.problems.append(f"{tenant} {path}: HTTP {status} {text[:80]}")
            elif path == "/stream":
                expected = "".join(f"{tenant}:{part}\n" for part in range(3))
                if text != expected:
                    self.problems.append(f"{tenant} streamed {text!r}")
            elif data.get("tenant") != tenant:
                self.problems.append(f"{tenant} got {data.get('tenant')!r}'s response")
            else:
                self.counts.setdefault(tenant, []).append(data["requests"])

    def summary(self) -> str:
        retried = sum(self.retries.values())
        kinds = ", ".join(f"{count} {name}" for name, count in self.retries.most_common())
        return (f"{retried} connection-level failures retried ({kinds or 'none'}), "
                f"{sum(self.maybe_counted.values())} of them on requests that count")

    def check(self, stats: dict[str, Any]) -> None:
        assert self.problems == [], self.problems[:10]
        assert sum(self.sent.values()) == self.requests
        assert len(self.sent) == TENANTS
        for tenant, hits in self.hits.items():
            assert stats[tenant]["tenant"] == tenant
            counted = stats[tenant]["requests"]
            # Every request counted, once; a retried one may have been counted before it failed.
            assert hits <= counted <= hits + self.maybe_counted[tenant], (tenant, hits, counted)
            # The typed histogram (numpy storage) counted the same requests, in this tenant only.
            assert sum(stats[tenant]["latency_us"].values()) == counted, tenant
            # Each increment answered its own new value: none repeated, none out of range (and
            # with no retries, exactly 1..n).
            answered = sorted(self.counts[tenant])
            assert len(set(answered)) == len(answered) == hits, tenant
            assert set(answered) <= set(range(1, counted + 1)), tenant


def get_with_retries(client: Any, tally: Tally, tenant: str, path: str) -> Any:
    """GET path as tenant, retrying connection-level failures; return the response or None
    (recorded as lost) when every try failed."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return client.get(path, headers={"host": tenant})
        except NOT_RETRIED:
            raise
        except RETRIED as error:
            if attempt == ATTEMPTS:
                tally.lost(tenant, path, error)
                return None
            tally.failed(tenant, path, error)
            time.sleep(backoff(attempt))
    raise AssertionError("unreachable")


def drive(base: str, tally: Tally, wrap: Any = None) -> dict[str, Any]:
    """Send tally.requests requests from CONCURRENCY threads sharing one client (so as many
    connections), through `wrap(transport)` if given; return each tenant's /stats."""
    started = time.monotonic()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    transport = httpx.HTTPTransport(limits=limits)
    with httpx.Client(base_url=base, transport=wrap(transport) if wrap else transport,
                      timeout=TIMEOUT) as client:

        def worker(first: int) -> None:
            for i in range(first, tally.requests, CONCURRENCY):
                tenant, path = tenant_of(i), path_of(i)
                if time.monotonic() - started > DEADLINE:
                    tally.lost(tenant, path, TimeoutError("past the load's deadline"))
                    continue
                response = get_with_retries(client, tally, tenant, path)
                if response is not None:
                    tally.record(tenant, path, response)

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for done in [pool.submit(worker, first) for first in range(CONCURRENCY)]:
                done.result()  # a worker's own failure (not a request's) fails the test
        stats = {}
        for t in range(TENANTS):
            response = get_with_retries(client, tally, tenant_of(t), "/stats")
            assert response is not None and response.status_code == 200, tally.problems[-1:]
            stats[tenant_of(t)] = response.json()
    return stats


def run_load(kind: str) -> None:
    tally = Tally()
    with serving(kind) as base:
        started = time.monotonic()
        stats = drive(base, tally)
        elapsed = time.monotonic() - started
    gc.collect()  # a socket left unclosed warns now, failing this test rather than a later one
    print(f"\n{kind.upper()}: {REQUESTS:,} requests in {elapsed:.1f}s "
          f"({REQUESTS / elapsed:,.0f}/s); {tally.summary()}")
    tally.check(stats)


@isolating
@pytest.mark.slow
def test_asgi_server_isolates_tenants_under_load() -> None:
    run_load("asgi")


@isolating
@pytest.mark.slow
def test_wsgi_server_isolates_tenants_under_load() -> None:
    run_load("wsgi")


class FlakyTransport(httpx.BaseTransport):
    """Fail like a busy machine: refuse every 70th request before sending it, and lose the
    answer to every 50th after the server handled it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent = itertools.count(1)  # next() on it is atomic: one C call under the GIL
        self.lost: Counter[str] = Counter()  # answers lost after /hit counted, per tenant
        self._lock = threading.Lock()

    def handle_request(self, request: Any) -> Any:
        n = next(self.sent)
        if n % 70 == 0:
            raise httpx.ConnectError("injected: connection refused", request=request)
        response = self.inner.handle_request(request)
        if n % 50 == 0:
            response.read()
            response.close()
            if request.url.path == "/hit":
                with self._lock:
                    self.lost[request.headers["host"]] += 1
            raise httpx.RemoteProtocolError("injected: server disconnected", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


@isolating
@pytest.mark.slow
def test_retries_tell_a_busy_machine_from_a_wrong_answer() -> None:
    tally = Tally(requests=2_000)
    flaky: list[FlakyTransport] = []

    def wrap(transport: Any) -> FlakyTransport:
        flaky.append(FlakyTransport(transport))
        return flaky[0]

    with serving("asgi") as base:
        stats = drive(base, tally, wrap)
    gc.collect()
    print(f"\n{tally.summary()}")
    tally.check(stats)  # no false failure: every lost answer was retried and tolerated
    lost = flaky[0].lost
    assert tally.retries["ConnectError"] > 0 and tally.retries["RemoteProtocolError"] > 0
    assert sum(lost.values()) > 0
    for tenant, hits in tally.hits.items():  # the server counted each lost answer, once
        assert stats[tenant]["requests"] == hits + lost[tenant], tenant

    # The same tally fails on a wrong answer, a double count, or a lost request.
    for spoil in ("wrong tenant", "double count", "lost"):
        spoiled = copy.deepcopy(tally)
        tenant = tenant_of(1)
        if spoil == "wrong tenant":
            spoiled.record(tenant, "/hit", httpx.Response(200, json={"tenant": tenant_of(2),
                                                                      "requests": 1}))
        elif spoil == "double count":
            stats_twice = copy.deepcopy(stats)
            stats_twice[tenant]["requests"] += 1 + tally.maybe_counted[tenant]
            with pytest.raises(AssertionError, match=tenant):
                spoiled.check(stats_twice)
            continue
        else:
            spoiled.lost(tenant, "/hit", httpx.ReadTimeout("timed out"))
            spoiled.requests += 1
        with pytest.raises(AssertionError, match=tenant):
            spoiled.check(stats)


@isolating
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_routes_and_hosts(kind: str) -> None:
    with serving(kind) as base, httpx.Client(base_url=base, timeout=TIMEOUT) as client:
        listing = client.get("/", headers={"host": "acme.example"})
        assert listing.status_code == 200
        assert set(listing.json()["endpoints"]) == {"/", "/hit", "/cache/<key>", "/stats",
                                                    "/stream"}
        for path in ["/nope", "/hits", "/cache/", "/stats/more"]:
            missing = client.get(path, headers={"host": "acme.example"})
            assert missing.status_code == 404, path
            assert "GET / lists them" in missing.json()["error"]
        assert client.get("/hit", headers={"host": "acme.example"}).json()["requests"] == 1
        for host in ["", "bad host", "a..b", "x" * 300, "acme.example:99999999", "-acme",
                     "[::1", "[::1]:", "::1", "[:::]"]:
            response = client.get("/hit", headers={"host": host})
            assert response.status_code == 400, host
            assert "tenant" in response.text
        for host in ["[::1]:8000", "[::1]", "[::1]:80"]:  # one tenant, whatever the port
            response = client.get("/hit", headers={"host": host})
            assert response.status_code == 200, host
            assert response.json()["tenant"] == "[::1]"
        stats = client.get("/stats", headers={"host": "acme.example"}).json()
        ipv6 = client.get("/stats", headers={"host": "[::1]:8000"}).json()
    # Only /hit counted: not the listing, not the 404s, not the rejected hosts.
    assert sum(stats.pop("latency_us").values()) == 1
    assert stats == {"tenant": "acme.example", "requests": 1, "cached": []}
    assert ipv6["requests"] == 3


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_junk_hosts_make_at_most_max_tenants(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Host header names a tenant: the example keeps at most MAX_TENANTS of them."""
    monkeypatch.syspath_prepend(str(ROOT))
    state = importlib.import_module("examples.tenant_server.state")
    module = importlib.import_module("examples.tenant_server."
                                     + ("app" if kind == "asgi" else "wsgi_app"))
    registry = module.app.registry
    assert registry.max_tenants == state.MAX_TENANTS
    junk = [f"junk{i}.example" for i in range(5 * state.MAX_TENANTS)]
    try:
        statuses = asyncio.run(_asgi_hits(module.app, junk)) if kind == "asgi" else [
            _wsgi_hit(module.app, host) for host in junk]
        assert statuses == [200] * len(junk)
        assert len(registry) == state.MAX_TENANTS
        assert registry.keys() == junk[-state.MAX_TENANTS:]  # the least recently used went
    finally:
        for key in registry.keys():
            registry.evict(key)


async def _asgi_hits(app: Any, hosts: list[str]) -> list[int]:
    statuses = []
    for host in hosts:
        scope = {"type": "http", "method": "GET", "path": "/hit", "query_string": b"",
                 "headers": [(b"host", host.encode())], "http_version": "1.1"}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        await app(scope, receive, send)
        statuses.append(sent[0]["status"])
    return statuses


def _wsgi_hit(app: Any, host: str) -> int:
    environ: dict[str, Any] = {"PATH_INFO": "/hit", "HTTP_HOST": host}
    setup_testing_defaults(environ)
    started: list[str] = []
    body = app(environ, lambda status, headers, exc_info=None: started.append(status))
    try:
        b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return int(started[0].split()[0])
