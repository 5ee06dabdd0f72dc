#!/usr/bin/env python3
"""Bookinfo's services as small stand-ins for pods: each answers JSON on 0.0.0.0:PORT and calls the others by
Service name with a plain HTTP client (http://reviews:9080/...): no proxy settings, no Host tricks. In a pod with a
sidecar, iptables sends those calls to Envoy.

    productpage  GET /productpage  -> details /details/0 and reviews /reviews/0; 502 if either fails
    details      GET /details/0
    reviews      GET /reviews/0    -> v2 and v3 call ratings /ratings/0; v1 does not
    ratings      GET /ratings/0
    any          GET /slow?ms=N    answers after N ms (a request in flight for drain tests)

Each call forwards the headers real Bookinfo's productpage and reviews forward (end-user, user-agent, cookie,
x-request-id, the b3 and W3C trace headers...), so a content rule on reviews sees what the browser sent to
productpage; reviews answers the forwarded headers it saw. One line `served PATH` per request goes to stdout.

    python3 tests/peers/bookinfo.py --role reviews --version v3 --port 9080
"""

import argparse
import http.client
import json
import select
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The headers Bookinfo's services propagate (tracing, the user, the browser).
FORWARDED = (
    "x-request-id",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
    "x-ot-span-context",
    "x-cloud-trace-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "grpc-trace-bin",
)

CALL_TIMEOUT = 10.0
_local = threading.local()
_print_lock = threading.Lock()


def _connection(host: str) -> tuple[http.client.HTTPConnection, bool]:
    """This thread's keep-alive connection to host:port, and whether it was used before."""
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    conn = pool.get(host)
    # A pooled connection the peer closed while idle is readable (EOF): open a new one, as urllib3 does.
    if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
        conn.close()
        conn = None
    if conn is None or conn.sock is None:
        name, _, port = host.partition(":")
        conn = http.client.HTTPConnection(name, int(port or 80), timeout=CALL_TIMEOUT)
        pool[host] = conn
        return conn, False
    return conn, True


def call(url: str, headers: dict) -> tuple[int, dict]:
    """GET url with the forwarded headers; (status, JSON body or {"error": ...})."""
    parts = urllib.parse.urlsplit(url)
    for attempt in range(2):
        conn, reused = _connection(parts.netloc)
        try:
            conn.request("GET", parts.path or "/", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, {"error": body.decode(errors="replace")[:200]}
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            conn.close()
            # A GET on a reused connection that the peer closed before answering may be sent again (RFC 9112 9.3.1).
            if reused and attempt == 0:
                continue
            return 599, {"error": f"{type(e).__name__}: {e}"}
        except OSError as e:
            conn.close()
            return 599, {"error": f"{type(e).__name__}: {e}"}
    return 599, {"error": "unreachable"}


def handler_for(role: str, version: str):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = urllib.parse.urlsplit(self.path)
            with _print_lock:
                print(f"served {path.path}", flush=True)
            forward = {h: self.headers[h] for h in FORWARDED if self.headers.get(h) is not None}
            if path.path == "/slow":
                ms = int(urllib.parse.parse_qs(path.query).get("ms", ["1000"])[0])
                time.sleep(ms / 1000)
                return self.answer(200, {"service": role, "version": version, "slept_ms": ms})
            if path.path == "/health":
                return self.answer(200, {"service": role, "version": version})
            answer = {"service": role, "version": version}
            # The caller's identity as the sidecar's inbound listener saw it (workload mTLS), when there is one.
            if self.headers.get("x-forwarded-client-cert") is not None:
                answer["xfcc"] = self.headers["x-forwarded-client-cert"]
            status = 200
            if role == "productpage" and path.path == "/productpage":
                for name, url in (("details", "http://details:9080/details/0"), ("reviews", "http://reviews:9080/reviews/0")):
                    code, body = call(url, forward)
                    answer[name] = body
                    if code != 200:
                        status = 502
                        answer.setdefault("errors", []).append(f"{name}: HTTP {code} {body.get('error', '')}")
            elif role == "reviews" and path.path.startswith("/reviews/"):
                answer["headers"] = forward
                if version != "v1":
                    code, body = call("http://ratings:9080/ratings/0", forward)
                    answer["ratings"] = body
                    if code != 200:
                        status = 502
                        answer["errors"] = [f"ratings: HTTP {code} {body.get('error', '')}"]
            elif role == "details" and path.path.startswith("/details/"):
                answer["isbn"] = "0486424618"
            elif role == "ratings" and path.path.startswith("/ratings/"):
                answer["stars"] = 5
            else:
                status = 404
            self.answer(status, answer)

        def answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # the `served` lines say enough
            pass

    return Handler


class Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer's own looks the address up in DNS (getfqdn), which a pod without a name server waits on.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "localhost", self.server_address[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", required=True, choices=["productpage", "details", "reviews", "ratings"])
    parser.add_argument("--version", default="v1")
    parser.add_argument("--port", type=int, default=9080)
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args()
    server = Server((args.host, args.port), handler_for(args.role, args.version))
    print(f"ready {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
