"""The ASGI app: `python -m examples.tenant_server asgi` serves it on uvicorn (one tenant per
Host header, at most MAX_TENANTS kept).

`plain_app` is the same app without the middleware: every request then lands in the host;
`contextvar_app` sets and resets one bare ContextVar around it (both used to measure what the
middleware costs).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from typing import Any

from percontainer import current
from percontainer.asgi import TenantMiddleware
from percontainer.registry import TenantRegistry

from .state import MAX_TENANTS, respond


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def plain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/stream":  # a streaming body: every chunk says whose it is
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        for part in range(3):
            await asyncio.sleep(0)  # other requests run here
            await send({"type": "http.response.body", "more_body": part < 2,
                        "body": f"{current().name}:{part}\n".encode()})
        return
    status, answer = respond(scope["path"], scope["method"], await _body(receive))
    payload = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


app = TenantMiddleware(plain_app, registry=TenantRegistry(max_tenants=MAX_TENANTS))

_request_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("request_tenant")


async def contextvar_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The plain app with a bare ContextVar set and reset around each request: what any
    contextvars-based way of tracking the tenant pays, for comparison."""
    token = _request_tenant.set("tenant")
    try:
        await plain_app(scope, receive, send)
    finally:
        _request_tenant.reset(token)
