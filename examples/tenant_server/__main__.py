"""Serve the example: `python -m examples.tenant_server asgi|wsgi [--port N] [--plain]`."""

from __future__ import annotations

import argparse
import socketserver
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request."""

    daemon_threads = True
    request_queue_size = 256


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002  # the base's name
        return None


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.tenant_server")
    parser.add_argument("kind", choices=["asgi", "wsgi"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--plain", action="store_true", help="without the tenant middleware")
    parser.add_argument("--contextvar", action="store_true",
                        help="ASGI without the middleware, a bare ContextVar set per request")
    args = parser.parse_args()
    if args.kind == "asgi":
        import uvicorn

        name = "contextvar_app" if args.contextvar else "plain_app" if args.plain else "app"
        target = f"examples.tenant_server.app:{name}"
        uvicorn.run(target, host=args.host, port=args.port, log_level="warning")
        return
    from . import wsgi_app

    app = wsgi_app.plain_app if args.plain else wsgi_app.app
    server = make_server(args.host, args.port, app, server_class=ThreadingWSGIServer,
                         handler_class=QuietHandler)
    print(f"serving WSGI on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
