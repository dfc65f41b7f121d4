"""ASGI middleware: every request runs inside its tenant's container.

    app = TenantMiddleware(app)                      # the tenant is the Host header's name
    app = TenantMiddleware(app, key=path_prefix_key)  # or the first path segment, or...

HTTP and WebSocket connections run inside the container (streaming bodies and tasks the app
starts included: they live in the request's task). Lifespan events run in the host. A request
without a usable key gets 400, an unknown tenant (auto_create off) 404, from `reject`; never
another tenant's container.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._core import host
from ._keys import normalize_host, plain_reject, prefix_of
from .registry import TenantRegistry, UnknownTenantError

__all__ = ["TenantMiddleware", "header_key", "host_key", "path_prefix_key"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
KeyFunction = Callable[[Scope], "str | None"]
RejectFunction = Callable[[int, str], "tuple[int, list[tuple[str, str]], bytes]"]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name or key.lower() == name:  # ASGI servers send lower-case names
            return bytes(value).decode("latin-1")
    return None


# Host header value -> tenant key: a server sees the same few values over and over. A plain
# dict read is cheaper per request than an lru_cache call; it is emptied when it gets large.
_host_keys: dict[bytes, str | None] = {}
_HOST_KEYS_MAX = 4096


def host_key(scope: Scope) -> str | None:
    """The tenant is the Host header's name (lower-cased, port dropped); None if malformed."""
    for name, value in scope.get("headers", ()):
        if name == b"host" or name.lower() == b"host":
            try:
                return _host_keys[value]
            except (KeyError, TypeError):  # new, or not bytes (a bytearray, say)
                value = bytes(value)
                key = normalize_host(value.decode("latin-1"))
                if len(_host_keys) >= _HOST_KEYS_MAX:
                    _host_keys.clear()
                _host_keys[value] = key
                return key
    return None


def path_prefix_key(scope: Scope) -> str | None:
    """The tenant is the first segment of the path."""
    return prefix_of(scope.get("path", ""))


def header_key(name: str) -> KeyFunction:
    """Return a key function: the tenant is the value of header `name`."""
    wanted = name.lower().encode("latin-1")

    def key(scope: Scope) -> str | None:
        value = _header(scope, wanted)
        return value.strip() or None if value is not None else None

    return key


class TenantMiddleware:
    """Run each HTTP and WebSocket connection inside its tenant's container."""

    def __init__(self, app: ASGIApp, *, key: KeyFunction = host_key,
                 registry: TenantRegistry | None = None,
                 reject: RejectFunction = plain_reject) -> None:
        self.app = app
        self.key = key
        self.registry = registry if registry is not None else TenantRegistry()
        self.reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            with host:  # lifespan and anything else: the host, whatever the caller is in
                await self.app(scope, receive, send)
            return
        tenant = self.key(scope)
        if tenant is None:
            await self._reject(scope, send, 400, "missing or malformed tenant")
            return
        registry = self.registry
        try:
            container = registry.enter(tenant)
        except UnknownTenantError:
            await self._reject(scope, send, 404, f"unknown tenant {tenant!r}")
            return
        try:
            await self.app(scope, receive, send)
        finally:
            registry.leave(tenant, container)

    async def _reject(self, scope: Scope, send: Send, status: int, reason: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": reason[:120]})
            return
        code, headers, body = self.reject(status, reason)
        await send({"type": "http.response.start", "status": code,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})
