"""Tenant keys from requests: what the ASGI and WSGI middleware share."""

from __future__ import annotations

import functools
import ipaddress
import re

__all__ = ["normalize_host", "plain_reject", "prefix_of"]

# A host name (RFC 1123 labels), an IPv4 address or an IPv6 literal in brackets (RFC 3986's
# IP-literal, as browsers send `Host: [::1]:8000`), with an optional port; nothing else.
_HOST = re.compile(r"(?:(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)"
                   r"|\[(?P<ipv6>[0-9A-Fa-f:.]{2,45})\])(?::(?P<port>[0-9]{1,5}))?")


@functools.lru_cache(maxsize=4096)  # a server sees the same few Host values over and over
def normalize_host(value: str | None) -> str | None:
    """Return the tenant key of a Host header (the name or the bracketed IPv6 literal,
    lower-cased, without the port), or None if the header is missing or malformed."""
    if not value or len(value) > 260:
        return None
    match = _HOST.fullmatch(value.strip())
    if match is None or (match["port"] is not None and int(match["port"]) > 65535):
        return None
    if match["ipv6"] is None:
        return match["name"].lower()
    try:
        ipaddress.IPv6Address(match["ipv6"])  # the pattern lets through "[:::]" and the like
    except ValueError:
        return None
    return f"[{match['ipv6'].lower()}]"  # as written, like a name: no canonical form is made


def prefix_of(path: str) -> str | None:
    """Return the first segment of a path ("/acme/orders" -> "acme"), or None if empty."""
    segment = path.lstrip("/").split("/", 1)[0]
    return segment or None


def plain_reject(status: int, reason: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """The default answer to a request with no usable tenant: plain text, the status given."""
    body = f"{status} {reason}\n".encode()
    return status, [("content-type", "text/plain; charset=utf-8"),
                    ("content-length", str(len(body)))], body
