"""Tenant keys from requests: what the ASGI and WSGI middleware share."""

from __future__ import annotations

import functools
import re

__all__ = ["normalize_host", "plain_reject", "prefix_of"]

# A host name (RFC 1123 labels) or an IPv4 address, with an optional port; nothing else.
_HOST = re.compile(r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)(?::[0-9]{1,5})?")

@functools.lru_cache(maxsize=4096)  # a server sees the same few Host values over and over
def normalize_host(value: str | None) -> str | None:
    """Return the tenant key of a Host header (the name, lower-cased, without the port), or
    None if the header is missing or malformed."""
    if not value or len(value) > 260:
        return None
    match = _HOST.fullmatch(value.strip())
    return match.group("name").lower() if match else None


def prefix_of(path: str) -> str | None:
    """Return the first segment of a path ("/acme/orders" -> "acme"), or None if empty."""
    segment = path.lstrip("/").split("/", 1)[0]
    return segment or None


def plain_reject(status: int, reason: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The default answer to a request with no usable tenant: plain text, the status given."""
    body = f"{status} {reason}\n".encode()
    return status, [("content-type", "text/plain; charset=utf-8"),
                    ("content-length", str(len(body)))], body
