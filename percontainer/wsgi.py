"""WSGI middleware: every request runs inside its tenant's container.

    app = TenantMiddleware(app)                      # the tenant is the Host header's name
    app = TenantMiddleware(app, key=path_prefix_key)  # or the first path segment, or...

The application call and every step of the response body (a generator streaming its chunks,
and its close()) run inside the container, in whatever thread the server uses, and the
tenant stays pinned against eviction until the server closes the body. A request without a
usable key gets 400, an unknown tenant (auto_create off) 404, from `reject`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._core import Container
from ._errors import ContainerError
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
        # The response runs in a context of its own, entered in the tenant once: a body
        # generator may then hold a `with` across its yields, and whatever the app leaves
        # entered stays in that context, never in the server's thread.
        context = contextvars.copy_context()
        try:
            context.run(container.__enter__)
        except BaseException:
            self.registry.unpin(tenant, container)
            raise
        body_release = _Release(context, container,
                                lambda: self.registry.unpin(tenant, container))
        try:
            body = context.run(self.app, environ, start_response)
        except BaseException:
            body_release()
            raise
        if type(body) is list or type(body) is tuple:  # made already: iterating runs no app code
            body_release()
            return body
        return _TenantBody(body, context, body_release)

    def _reject(self, start_response: StartResponse, status: int,
                reason: str) -> Iterable[bytes]:
        code, headers, body = self.reject(status, reason)
        start_response(f"{code} {_REASONS.get(code, 'Error')}", headers)
        return [body]


class _Release:
    """Leave the tenant in the response's context and unpin it, once."""

    def __init__(self, context: contextvars.Context, container: Container,
                 unpin: Callable[[], None]) -> None:
        self._context: contextvars.Context | None = context
        self._container = container
        self._unpin = unpin

    def __call__(self) -> None:
        context, self._context = self._context, None
        if context is None:
            return
        try:
            context.run(_leave, self._container)
        finally:
            self._unpin()


def _leave(container: Container) -> None:
    try:
        container.__exit__(None, None, None)
    except ContainerError:
        # The app left a container entered above the tenant: the context goes with this
        # response, and its entries stop counting when it is collected.
        pass


class _TenantBody:
    """A response body whose iteration and close() run inside the tenant's container, in the
    response's own context."""

    def __init__(self, body: Iterable[bytes], context: contextvars.Context,
                 release: _Release) -> None:
        self._body = body
        self._chunks: Iterator[bytes] | None = None
        self._context = context
        self._release: _Release | None = release

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._context.run(iter, self._body)
        return self._context.run(next, self._chunks)

    def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                self._context.run(close)
        finally:
            release()
