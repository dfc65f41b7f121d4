"""Per-tenant state, declared once at module level like any global."""

from __future__ import annotations

from percontainer import PerContainer, current, per_container

requests = PerContainer("examples.tenant_server.requests", default=0)


@per_container
def cache() -> dict[str, str]:
    """Each tenant's own cache, made on its first use."""
    return {}


def hit(path: str, method: str, body: bytes) -> dict[str, object]:
    """Handle one request; no tenant argument, yet only this tenant's state is touched."""
    tenant = current().name
    if path == "/stats":
        return {"tenant": tenant, "requests": requests.get(), "cached": sorted(cache.get())}
    count = requests.add(1)
    if path.startswith("/cache/"):
        key = path[len("/cache/"):]
        if method == "PUT":
            cache.get()[key] = body.decode()
        return {"tenant": tenant, "requests": count, "key": key, "value": cache.get().get(key)}
    return {"tenant": tenant, "requests": count}
