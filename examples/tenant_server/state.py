"""Per-tenant state, declared once at module level like any global."""

from __future__ import annotations

import bisect
import time

import numpy as np

from percontainer import PerContainer, current, per_container

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


def hit(path: str, method: str, body: bytes) -> dict[str, object]:
    """Handle one request; no tenant argument, yet only this tenant's state is touched."""
    tenant = current().name
    if path == "/stats":
        return {"tenant": tenant, "requests": requests.get(), "cached": sorted(cache.get()),
                "latency_us": dict(zip([*map(str, LATENCY_EDGES_US), "more"],
                                       latency.get().tolist()))}
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
    return response
