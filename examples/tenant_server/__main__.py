"""Serve the example: `python -m examples.tenant_server asgi|wsgi [--port N] [--plain]`.

ASGI runs on uvicorn, WSGI on waitress (threaded, in one process); both print the address
they serve on once they accept connections (`--port 0` picks a free port).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys


def url(host: str, port: int) -> str:
    """Return the base URL of a server on host:port (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_asgi(host: str, port: int, target: str) -> None:
    """Serve `module:attribute` on uvicorn."""
    import uvicorn

    config = uvicorn.Config(target, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    # Made with proto 0, which asyncio's transports take for "not TCP": without this, Nagle
    # holds each response's body until the client's delayed ACK of its start, 40 ms per request
    # (accepted connections inherit the option).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.listen(config.backlog)  # connections wait from here on, so the address is served
    print(f"serving ASGI (uvicorn) on {url(host, sock.getsockname()[1])}", flush=True)
    server.run(sockets=[sock])


def serve_wsgi(host: str, port: int, plain: bool, threads: int) -> None:
    """Serve the WSGI app on waitress, `threads` worker threads in this one process."""
    try:
        from waitress.server import create_server
    except ImportError:
        sys.exit("the WSGI example runs on waitress: pip install '.[server]'")
    from . import wsgi_app

    logging.basicConfig()  # waitress reports app errors and a full task queue through logging
    app = wsgi_app.plain_app if plain else wsgi_app.app
    server = create_server(app, host=host, port=port, threads=threads)  # bound and listening
    # One socket per address the host resolves to ("localhost": IPv4 and IPv6, say).
    listening = getattr(server, "effective_listen", None) or [(host, server.effective_port)]
    addresses = ", ".join(url(*address) for address in listening)
    print(f"serving WSGI (waitress, {threads} threads) on {addresses}", flush=True)
    server.run()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.tenant_server")
    parser.add_argument("kind", choices=["asgi", "wsgi"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--plain", action="store_true", help="without the tenant middleware")
    parser.add_argument("--contextvar", action="store_true",
                        help="ASGI without the middleware, a bare ContextVar set per request")
    parser.add_argument("--threads", type=int, default=8, help="WSGI worker threads")
    args = parser.parse_args()
    if args.kind == "asgi":
        name = "contextvar_app" if args.contextvar else "plain_app" if args.plain else "app"
        serve_asgi(args.host, args.port, f"examples.tenant_server.app:{name}")
    else:
        serve_wsgi(args.host, args.port, args.plain, args.threads)


if __name__ == "__main__":
    main()
