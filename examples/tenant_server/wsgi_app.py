"""The WSGI twin: `python -m examples.tenant_server wsgi` serves it on waitress (threaded)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from percontainer import current
from percontainer.registry import TenantRegistry
from percontainer.wsgi import TenantMiddleware

from .state import MAX_TENANTS, respond

_STATUS_LINES = {200: "200 OK", 404: "404 Not Found"}


def plain_app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO") == "/stream":
        start_response("200 OK", [("content-type", "text/plain")])
        return _stream()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    status, answer = respond(environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"], body)
    payload = json.dumps(answer).encode()
    start_response(_STATUS_LINES[status], [("content-type", "application/json"),
                                           ("content-length", str(len(payload)))])
    return [payload]


def _stream() -> Iterator[bytes]:
    for part in range(3):  # each chunk is made when the server asks for it
        yield f"{current().name}:{part}\n".encode()


app = TenantMiddleware(plain_app, registry=TenantRegistry(max_tenants=MAX_TENANTS))
