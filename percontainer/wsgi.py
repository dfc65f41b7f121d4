"""WSGI middleware: every request runs inside its tenant's container.

    app = TenantMiddleware(app)                      # the tenant is the Host header's name
    app = TenantMiddleware(app, key=path_prefix_key)  # or the first path segment, or...

The application call and every step of the response body (a generator streaming its chunks,
and its close()) run inside the container, in whatever thread the server uses, and the
tenant stays pinned against eviction until the server closes the body. A request without a
usable key gets 400, an unknown tenant (auto_create off) 404, from `reject`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._core import Container
from ._keys import normalize_host, plain_reject, prefix_of
from .registry import TenantRegistry, UnknownTenantError

__all__ = ["TenantMiddleware", "header_key", "host_key", "path_prefix_key"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
KeyFunction = Callable[[Environ], "str | None"]
RejectFunction = Callable[[int, str], "tuple[int, list[tuple[str, str]], bytes]"]

_REASONS = {400: "Bad Request", 404: "Not Found"}


def host_key(environ: Environ) -> str | None:
    """The tenant is the Host header's name (lower-cased, port dropped); None if malformed."""
    return normalize_host(environ.get("HTTP_HOST"))


def path_prefix_key(environ: Environ) -> str | None:
    """The tenant is the first segment of the path."""
    return prefix_of(environ.get("PATH_INFO", ""))


def header_key(name: str) -> KeyFunction:
    """Return a key function: the tenant is the value of header `name`."""
    variable = "HTTP_" + name.upper().replace("-", "_")

    def key(environ: Environ) -> str | None:
        value = environ.get(variable)
        return value.strip() or None if isinstance(value, str) else None

    return key


class TenantMiddleware:
    """Run each request, body included, inside its tenant's container."""

    def __init__(self, app: WSGIApp, *, key: KeyFunction = host_key,
                 registry: TenantRegistry | None = None,
                 reject: RejectFunction = plain_reject) -> None:
        self.app = app
        self.key = key
        self.registry = registry if registry is not None else TenantRegistry()
        self.reject = reject

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        tenant = self.key(environ)
        if tenant is None:
            return self._reject(start_response, 400, "missing or malformed tenant")
        try:
            container = self.registry.pin(tenant)
        except UnknownTenantError:
            return self._reject(start_response, 404, f"unknown tenant {tenant!r}")
        try:
            body = container.run(self.app, environ, start_response)
        except BaseException:
            self.registry.unpin(tenant, container)
            raise
        if type(body) is list or type(body) is tuple:  # made already: iterating runs no app code
            self.registry.unpin(tenant, container)
            return body
        return _TenantBody(body, container, lambda: self.registry.unpin(tenant, container))

    def _reject(self, start_response: StartResponse, status: int,
                reason: str) -> Iterable[bytes]:
        code, headers, body = self.reject(status, reason)
        start_response(f"{code} {_REASONS.get(code, 'Error')}", headers)
        return [body]


class _TenantBody:
    """A response body whose iteration and close() run inside the tenant's container."""

    def __init__(self, body: Iterable[bytes], container: Container,
                 release: Callable[[], None]) -> None:
        self._body = body
        self._chunks: Iterator[bytes] | None = None
        self._container = container
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._container.run(iter, self._body)
        return self._container.run(next, self._chunks)

    def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                self._container.run(close)
        finally:
            release()
