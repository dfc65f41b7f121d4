"""The example server under load, for real: uvicorn (ASGI) and a threaded WSGI server on
127.0.0.1, driven by httpx with 64 concurrent connections, 20,000 requests over 100 tenants.

Every per-tenant counter must equal the requests sent to that tenant, every response must name
the tenant it was sent for (streamed chunks included), and no response may be an error."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from percontainer import _config

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.skipif(_config.DISABLED,
                                reason="asserts isolation; PERCONTAINER_DISABLE=1 is set")

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = 20_000
TENANTS = 100
CONCURRENCY = 64
STREAM_EVERY = 20  # one round of requests over the tenants in 20 asks for streamed bodies
DEADLINE = 240.0  # seconds for the whole load, far above what it takes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(kind: str) -> Iterator[str]:
    """Start `python -m examples.tenant_server KIND` and yield its base URL."""
    port = free_port()
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen(
        [sys.executable, "-m", "examples.tenant_server", kind, "--port", str(port)],
        cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() - started > 30:
                    raise RuntimeError(f"{kind} server did not start: "
                                       f"{server.stderr.read().decode() if server.stderr else ''}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        if server.stderr is not None:
            server.stderr.close()


def tenant_of(i: int) -> str:
    return f"tenant{i % TENANTS}.example"


class Tally:
    """What the responses said, per tenant."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = defaultdict(int)
        self.hits: dict[str, int] = defaultdict(int)
        self.counts: dict[str, list[int]] = defaultdict(list)
        self.problems: list[str] = []

    def record(self, tenant: str, path: str, status: int, text: str, data: Any) -> None:
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
            self.counts[tenant].append(data["requests"])

    def check(self, stats: dict[str, Any]) -> None:
        assert self.problems == [], self.problems[:10]
        assert sum(self.sent.values()) == REQUESTS
        assert len(self.sent) == TENANTS
        for tenant, hits in self.hits.items():
            assert stats[tenant]["tenant"] == tenant
            assert stats[tenant]["requests"] == hits, tenant  # every request counted, once
            # The typed histogram (numpy storage) counted the same requests, in this tenant only.
            assert sum(stats[tenant]["latency_us"].values()) == hits, tenant
            # Each increment answered its own new value: 1..n, none lost, none repeated.
            assert sorted(self.counts[tenant]) == list(range(1, hits + 1)), tenant


def path_of(i: int) -> str:
    return "/stream" if (i // TENANTS) % STREAM_EVERY == 0 else "/hit"


async def drive_async(base: str) -> tuple[Tally, dict[str, Any]]:
    tally = Tally()
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> None:
            tenant, path = tenant_of(i), path_of(i)
            async with gate:
                response = await client.get(path, headers={"host": tenant})
            data = response.json() if path != "/stream" and response.status_code == 200 else {}
            tally.record(tenant, path, response.status_code, response.text, data)

        for start in range(0, REQUESTS, 2_000):
            await asyncio.gather(*(one(i) for i in range(start, start + 2_000)))
        stats = {}
        for t in range(TENANTS):
            response = await client.get("/stats", headers={"host": tenant_of(t)})
            stats[tenant_of(t)] = response.json()
    return tally, stats


@pytest.mark.slow
def test_asgi_server_isolates_tenants_under_load() -> None:
    with serving("asgi") as base:
        started = time.monotonic()
        tally, stats = asyncio.run(asyncio.wait_for(drive_async(base), DEADLINE))
        elapsed = time.monotonic() - started
    tally.check(stats)
    print(f"\nASGI: {REQUESTS:,} requests in {elapsed:.1f}s ({REQUESTS / elapsed:,.0f}/s)")


@pytest.mark.slow
def test_wsgi_server_isolates_tenants_under_load() -> None:
    tally = Tally()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    with serving("wsgi") as base, httpx.Client(base_url=base, limits=limits,
                                               timeout=30) as client:
        started = time.monotonic()

        def one(i: int) -> tuple[str, str, int, str, Any]:
            if time.monotonic() - started > DEADLINE:
                raise TimeoutError("the WSGI load ran past its deadline")
            tenant, path = tenant_of(i), path_of(i)
            response = client.get(path, headers={"host": tenant})
            data = response.json() if path != "/stream" and response.status_code == 200 else {}
            return tenant, path, response.status_code, response.text, data

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            for result in pool.map(one, range(REQUESTS)):
                tally.record(*result)
        elapsed = time.monotonic() - started
        stats = {tenant_of(t): client.get("/stats", headers={"host": tenant_of(t)}).json()
                 for t in range(TENANTS)}
    tally.check(stats)
    print(f"\nWSGI: {REQUESTS:,} requests in {elapsed:.1f}s ({REQUESTS / elapsed:,.0f}/s)")


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_bad_hosts_get_400_and_touch_no_tenant(kind: str) -> None:
    with serving(kind) as base, httpx.Client(base_url=base, timeout=10) as client:
        client.get("/hit", headers={"host": "acme.example"})
        for host in ["", "bad host", "a..b", "x" * 300, "acme.example:99999999", "-acme"]:
            response = client.get("/hit", headers={"host": host})
            assert response.status_code == 400, host
            assert "tenant" in response.text
        stats = client.get("/stats", headers={"host": "acme.example"}).json()
    assert sum(stats.pop("latency_us").values()) == 1
    assert stats == {"tenant": "acme.example", "requests": 1, "cached": []}
