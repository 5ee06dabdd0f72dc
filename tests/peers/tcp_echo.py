#!/usr/bin/env python3
"""A plain TCP server on 0.0.0.0 for the pod tests: for each line a client sends it answers one line,
`NAME PORT PEER LINE`, where PORT is the port it was reached on and PEER the address the connection came from
(127.0.0.6 when a sidecar's inbound passthrough delivered it, 127.0.0.1 for its inbound clusters).

    python3 tests/peers/tcp_echo.py --name web --ports 7000,7001,7002

Prints "ready" once every port listens; one line `served PORT` per connection on stdout.
"""

import argparse
import socketserver
import sys
import threading


def handler_for(name: str):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            port = self.server.server_address[1]
            print(f"served {port}", flush=True)
            for line in self.rfile:
                text = line.decode(errors="replace").strip()
                self.wfile.write(f"{name} {port} {self.client_address[0]} {text}\n".encode())
                self.wfile.flush()

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--ports", required=True, help="comma-separated")
    parser.add_argument("--host", default="0.0.0.0")
    args = parser.parse_args()
    servers = [Server((args.host, int(p)), handler_for(args.name)) for p in args.ports.split(",")]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("ready", flush=True)
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
