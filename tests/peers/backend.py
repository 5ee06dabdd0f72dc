#!/usr/bin/env python3
"""A stand-in service version for tests and the demo: an HTTP/1.1 keep-alive server on 127.0.0.1
that answers every request with its name (body and `x-backend` header), or with `--body TEXT` as the body.

    python3 tests/peers/backend.py --port 19082 --name v1
    python3 tests/peers/backend.py --port 19084 --name reviews-v3 --body "reviews-v3 (red stars)"

Prints "ready PORT" on stdout once it listens (`--port 0` lets the kernel pick). Nagle is off: with it on, Nagle and delayed ACKs hold
a keep-alive client near 27 requests/s.
"""

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handler_for(name: str, text: str):
    body = text.encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _answer(self, with_body: bool) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-backend", name)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def _drain_request_body(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def do_POST(self) -> None:  # noqa: N802
            self._drain_request_body()
            self._answer(True)

        def log_message(self, *args) -> None:  # quiet: one line per request drowns the test output
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--body", help="the answer's body (default: the name)")
    args = parser.parse_args()
    body = args.name if args.body is None else args.body
    server = ThreadingHTTPServer((args.host, args.port), handler_for(args.name, body))
    server.daemon_threads = True
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
