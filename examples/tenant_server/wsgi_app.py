"""The WSGI twin, served by a threaded server: `python -m examples.tenant_server wsgi`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from percontainer import current
from percontainer.wsgi import TenantMiddleware

from .state import hit


def plain_app(environ: dict[str, Any], start_response: Any) -> Any:
    if environ.get("PATH_INFO") == "/stream":
        start_response("200 OK", [("content-type", "text/plain")])
        return _stream()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    payload = json.dumps(hit(environ.get("PATH_INFO", "/"), environ["REQUEST_METHOD"],
                             body)).encode()
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(payload)))])
    return [payload]


def _stream() -> Iterator[bytes]:
    for part in range(3):  # each chunk is made when the server asks for it
        yield f"{current().name}:{part}\n".encode()


app = TenantMiddleware(plain_app)
