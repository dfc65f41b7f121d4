"""Per-tenant state, declared once at module level like any global, and the routes using it."""

from __future__ import annotations

import bisect
import time

import numpy as np

from percontainer import PerContainer, current, per_container

#: At most this many tenants are kept. Any Host header names a tenant, so without a bound each
#: junk host would make one for good; with it, the least recently used idle tenant is closed
#: to make room (its state goes with it).
MAX_TENANTS = 1_000

#: What the server answers, for `GET /`; any other path is 404 and counts nothing.
ENDPOINTS = {
    "/": "this list",
    "/hit": "count one request for this tenant; answers the new count",
    "/cache/<key>": "this tenant's cached value for <key>; PUT stores the body (counted too)",
    "/stats": "this tenant's count, cached keys and latency histogram",
    "/stream": "a streamed body: three chunks, each naming the tenant",
}

requests = PerContainer("examples.tenant_server.requests", default=0)

#: Upper edges, in microseconds, of the latency histogram's buckets; the last bucket is open.
LATENCY_EDGES_US = (4, 16, 64, 256, 1024)

#: Each tenant's histogram of handler time: a typed array in numpy storage, one row per tenant.
latency = PerContainer("examples.tenant_server.latency", dtype=np.uint64,
                       shape=len(LATENCY_EDGES_US) + 1)


@per_container
def cache() -> dict[str, str]:
    """Each tenant's own cache, made on its first use."""
    return {}


def respond(path: str, method: str, body: bytes) -> tuple[int, dict[str, object]]:
    """Answer one request (status, JSON payload); no tenant argument, yet only this tenant's
    state is touched."""
    tenant = current().name
    if path == "/":
        return 200, {"tenant": tenant, "endpoints": ENDPOINTS}
    if path == "/stats":
        return 200, {"tenant": tenant, "requests": requests.get(), "cached": sorted(cache.get()),
                     "latency_us": dict(zip([*map(str, LATENCY_EDGES_US), "more"],
                                            latency.get().tolist()))}
    if path != "/hit" and not (path.startswith("/cache/") and len(path) > len("/cache/")):
        return 404, {"tenant": tenant, "error": f"no endpoint {path}; GET / lists them"}
    started = time.perf_counter_ns()
    count = requests.add(1)
    response: dict[str, object] = {"tenant": tenant, "requests": count}
    if path.startswith("/cache/"):
        key = path[len("/cache/"):]
        if method == "PUT":
            cache.get()[key] = body.decode()
        response.update(key=key, value=cache.get().get(key))
    elapsed_us = (time.perf_counter_ns() - started) // 1000
    latency.get()[bisect.bisect_right(LATENCY_EDGES_US, elapsed_us)] += 1
    return 200, response
