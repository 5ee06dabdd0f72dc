#!/usr/bin/env python3
"""A proxyless gRPC peer for tests: a server that answers with its version name, and a client that
resolves `xds:///NAME` through Sluice and counts which version answered.

    grpc_peer.py server --port 0 --name v1                 # prints "ready PORT" once serving
    grpc_peer.py client --xds 127.0.0.1:15010 --target reviews -n 100
    grpc_peer.py client --direct 127.0.0.1:PORT -n 10      # no xDS (self-test)
    grpc_peer.py bootstrap --xds 127.0.0.1:15010 --node-id grpc-client   # print the xDS bootstrap

The method is `/sluice.test.Echo/Echo`, served by a generic handler over raw bytes, so no .proto
and no protoc are needed. The client prints one JSON line:
    {"counts": {"v1": 80, "v3": 20}, "errors": 0, "error_codes": {}}
"""

import argparse
import atexit
import json
import os
import sys
import tempfile
from collections import Counter
from concurrent import futures

import grpc

SERVICE = "sluice.test.Echo"
METHOD = f"/{SERVICE}/Echo"


def xds_bootstrap(xds: str, node_id: str, namespace: str = "default") -> dict:
    """The bootstrap a gRPC client needs to use Sluice as its xDS server (GRPC_XDS_BOOTSTRAP).

    `server_features: ["xds_v3"]` selects the v3 API; NAMESPACE is the node metadata key Sluice
    reads (src/bootstrap.rs) to pick the namespace's outbound config.
    """
    return {
        "xds_servers": [
            {
                "server_uri": xds,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": namespace, "metadata": {"NAMESPACE": namespace}},
    }


def serve(port: int, name: str) -> None:
    answer = name.encode()

    def echo(_request: bytes, _context) -> bytes:
        return answer

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"ready {bound}", flush=True)
    server.wait_for_termination()


def call_many(target: str, n: int, timeout: float, wait_ready: float) -> dict:
    counts: Counter = Counter()
    codes: Counter = Counter()
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=wait_ready)
        except grpc.FutureTimeoutError:
            pass  # the calls below fail and are counted; the caller sees why in error_codes
        echo = channel.unary_unary(METHOD)  # no serializers: raw bytes in and out
        for _ in range(n):
            try:
                counts[echo(b"", timeout=timeout).decode()] += 1
            except grpc.RpcError as e:
                codes[e.code().name] += 1
    return {"counts": dict(counts), "errors": sum(codes.values()), "error_codes": dict(codes)}


def client(args: argparse.Namespace) -> None:
    if args.direct:
        target = args.direct
    else:
        if not os.environ.get("GRPC_XDS_BOOTSTRAP"):
            if not args.xds:
                sys.exit("client: give --direct ADDR, --xds ADDR, or set GRPC_XDS_BOOTSTRAP")
            boot = xds_bootstrap(args.xds, args.node_id, args.namespace)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(boot, f)
            atexit.register(os.unlink, f.name)
            os.environ["GRPC_XDS_BOOTSTRAP"] = f.name
        target = f"xds:///{args.target}"
    print(json.dumps(call_many(target, args.n, args.timeout, args.wait_ready)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--name", required=True)
    c = sub.add_parser("client")
    c.add_argument("--direct", help="HOST:PORT to call without xDS")
    c.add_argument("--xds", help="Sluice's xDS address, when GRPC_XDS_BOOTSTRAP is not set")
    c.add_argument("--target", default="reviews", help="service name, resolved as xds:///NAME")
    c.add_argument("--node-id", default="grpc-peer")
    c.add_argument("--namespace", default="default")
    c.add_argument("-n", type=int, default=100)
    c.add_argument("--timeout", type=float, default=5.0, help="seconds per call")
    c.add_argument("--wait-ready", type=float, default=15.0, help="seconds to wait for the channel")
    b = sub.add_parser("bootstrap")
    b.add_argument("--xds", default="127.0.0.1:15010")
    b.add_argument("--node-id", default="grpc-peer")
    b.add_argument("--namespace", default="default")
    args = parser.parse_args()
    if args.mode == "server":
        serve(args.port, args.name)
    elif args.mode == "client":
        client(args)
    else:
        print(json.dumps(xds_bootstrap(args.xds, args.node_id, args.namespace), indent=2))


if __name__ == "__main__":
    main()
