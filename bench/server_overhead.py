"""What the tenant middleware costs the example server, with and without it, side by side.

Both parts measure the example as users run it: its TenantMiddleware keeps its tenants in a
TenantRegistry(max_tenants=MAX_TENANTS), 1,000, so every request takes the registry's locked
path (100 tenants stay under the bound: nothing is evicted).

1. In process: the ASGI app called directly with real scope/receive/send callables, through
   the example's TenantMiddleware (100 tenants, by Host) and without it, interleaved
   repeats, median; and, for comparison, through the middleware over a registry without
   limits (the lock-free path).
2. Over the network: the example server started for real (uvicorn for ASGI, waitress with its
   8 threads for WSGI) on 127.0.0.1, loaded by wrk (Debian's `wrk`; 64 connections,
   100 tenants by Host header), with and without the middleware in alternating rounds:
   requests/s, and the server process's CPU time per request during the load (from /proc,
   counted once the server answers, so its startup is left out), which the client sharing
   the machine does not blur; medians of the rounds, and for the overhead the median of each
   round's ratio to the plain server's run in the same round, with its range. With two CPUs
   or more and `taskset`, the server runs on CPU 0 and wrk on CPU 1, so they never compete
   for one; every server gets the same hash seed, so no variant draws luckier dict layouts.

Run:  python bench/server_overhead.py [--rounds N] [--seconds S]   (part 2 needs `wrk`)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples.tenant_server import app as asgi_example  # noqa: E402  # after the path setup
from examples.tenant_server import wsgi_app as wsgi_example
from examples.tenant_server.state import MAX_TENANTS
from percontainer.asgi import TenantMiddleware
from percontainer.registry import TenantRegistry

TENANTS = 100
WRK_SCRIPT = """
local i = 0
request = function()
  i = (i + 1) %% %d
  wrk.headers["Host"] = "tenant" .. i .. ".example"
  return wrk.format("GET", "/hit")
end
""" % TENANTS


def in_process(requests: int, repeats: int) -> dict[str, float]:
    """Return microseconds per request through each app, called directly."""

    async def call(app: Any, host: bytes) -> None:
        scope = {"type": "http", "method": "GET", "path": "/hit", "headers": [(b"host", host)],
                 "query_string": b"", "http_version": "1.1"}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            return None

        await app(scope, receive, send)

    hosts = [f"tenant{i}.example".encode() for i in range(TENANTS)]

    async def run(app: Any) -> float:
        started = time.perf_counter()
        for i in range(requests):
            await call(app, hosts[i % TENANTS])
        return (time.perf_counter() - started) / requests * 1e6

    unbounded = TenantMiddleware(asgi_example.app.app, registry=TenantRegistry())
    apps = {"with middleware": asgi_example.app, "without": asgi_example.plain_app,
            "unbounded": unbounded}
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(repeats):
        for name, app in apps.items():
            samples[name].append(asyncio.run(run(app)))
    return {name: statistics.median(values) for name, values in samples.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a live process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(kind: str, variant: str, seconds: float, script: str) -> tuple[float, float]:
    """Start the example server, load it with wrk for `seconds`; return requests/s and the
    server's CPU microseconds per request during the load (startup excluded)."""
    port = free_port()
    command = [sys.executable, "-m", "examples.tenant_server", kind, "--port", str(port)]
    if variant != "tenant":
        command.append(f"--{variant}")
    server = subprocess.Popen(_on_cpu(0) + command, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED="0"))
    try:
        _wait_until_answering(port)
        cpu_before = cpu_seconds(server.pid)
        done = subprocess.run(
            _on_cpu(1) + ["wrk", "-t1", "-c64", f"-d{max(1, round(seconds))}s", "-s", script,
             f"http://127.0.0.1:{port}/"], capture_output=True, text=True, check=True)
        cpu = cpu_seconds(server.pid) - cpu_before
    finally:
        server.terminate()
        server.wait(10)
    lines = done.stdout.splitlines()
    errors = [line for line in lines if "Non-2xx" in line or "Socket errors" in line]
    if errors:
        raise RuntimeError(f"wrk saw errors against {kind}: {errors}")
    requests = next(int(line.split()[0]) for line in lines if " requests in " in line)
    rps = next(float(line.split()[1]) for line in lines if line.startswith("Requests/sec:"))
    return rps, cpu / requests * 1e6


def _wait_until_answering(port: int) -> None:
    """Return once the server answers a request (uvicorn listens before it imports the app,
    so an accepted connection alone does not say the startup is over)."""
    deadline = time.monotonic() + 60
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/", headers={"Host": "tenant0.example"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server on port {port} did not answer within 60 s")
        time.sleep(0.05)


def _paired(variant: list[tuple[float, float]], plain: list[tuple[float, float]]) -> str:
    """Return the median over rounds of the CPU per request against the plain server's in the
    same round (neighbours in time, so slow drift cancels), with the range over rounds."""
    overheads = sorted((cpu / base - 1) * 100 for (_, cpu), (_, base) in zip(variant, plain))
    return (f"{statistics.median(overheads):+.1f}% "
            f"({overheads[0]:+.1f}% .. {overheads[-1]:+.1f}%)")


def _on_cpu(cpu: int) -> list[str]:
    """Return the command prefix that pins a process to one CPU, when that is possible."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", str(cpu)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    import percontainer

    for example in (asgi_example, wsgi_example):  # the labels say what the example runs
        if example.app.registry.max_tenants != MAX_TENANTS:
            raise RuntimeError(f"{example.__name__} keeps {example.app.registry.max_tenants} "
                               f"tenants, not MAX_TENANTS={MAX_TENANTS}: update this benchmark")
    print(f"percontainer {percontainer.IMPLEMENTATION} core, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs\n")
    micro = in_process(5_000, 9)
    ratio = micro["with middleware"] / micro["without"]
    print("| example app, in process | per request | overhead |")
    print("|---|---:|---:|")
    print(f"| ASGI, without middleware | {micro['without']:.2f} us | |")
    print(f"| ASGI, with TenantMiddleware (max_tenants={MAX_TENANTS:,}, as the example) "
          f"| {micro['with middleware']:.2f} us | {(ratio - 1) * 100:+.1f}% |")
    print(f"| ASGI, with TenantMiddleware, a registry without limits "
          f"| {micro['unbounded']:.2f} us "
          f"| {(micro['unbounded'] / micro['without'] - 1) * 100:+.1f}% |")
    if shutil.which("wrk") is None:
        print("\nwrk is not installed (apt-get install wrk): no served figures")
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    print("\n| example server, wrk, 64 connections | requests/s | server CPU per request "
          "| overhead (CPU), median of rounds (range) |")
    print("|---|---:|---:|---:|")
    try:
        for kind in ("asgi", "wsgi"):
            variants = ["plain", "contextvar", "tenant"] if kind == "asgi" else ["plain", "tenant"]
            rounds: dict[str, list[tuple[float, float]]] = {variant: [] for variant in variants}
            for _ in range(args.rounds):
                for variant in variants:
                    rounds[variant].append(served(kind, variant, args.seconds, script.name))
            labels = {"plain": "without middleware",
                      "contextvar": "a bare ContextVar set/reset per request",
                      "tenant": f"with TenantMiddleware (max_tenants={MAX_TENANTS:,})"}
            for variant in variants:
                rps = statistics.median(rate for rate, _ in rounds[variant])
                cpu = statistics.median(cpu for _, cpu in rounds[variant])
                overhead = "" if variant == "plain" else _paired(rounds[variant], rounds["plain"])
                print(f"| {kind.upper()}, {labels[variant]} | {rps:,.0f} | {cpu:.1f} us "
                      f"| {overhead} |")
    finally:
        os.unlink(script.name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
