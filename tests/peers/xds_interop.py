#!/usr/bin/env python3
"""gRPC's xDS interop peers (grpc/grpc doc/xds-test-descriptions.md): a test server and a client that sends a
constant load and answers the driver's stats and configure calls.

    xds_interop.py server --port 0 --hostname a             # prints "ready PORT" once serving
    xds_interop.py client --server 127.0.0.1:PORT --stats-port 0          # direct, no xDS (self-test)
    xds_interop.py client --server xds:///echo.default.svc.cluster.local:9090 --stats-port 0 \\
        --xds 127.0.0.1:15010 --node-id interop-client [--namespace default] \\
        [--qps 100] [--rpc EmptyCall,UnaryCall] [--metadata "UnaryCall:rpc-behavior:sleep-2"] [--rpc-timeout-sec 20]

The server serves `grpc.testing.TestService` (EmptyCall, UnaryCall). Every answer names the server in the
header `hostname: NAME` (in the initial metadata when OK, in the trailers of an error, so that the client may
retry it). The request header `rpc-behavior` (comma-separated entries, in order) asks for `sleep-N`,
`keep-open`, `error-code-N`, `succeed-on-retry-attempt-N`, each optionally prefixed by `hostname=H ` to apply
only on the server named H.

The client prints "ready STATSPORT" and serves `grpc.testing.LoadBalancerStatsService` (GetClientStats,
GetClientAccumulatedStats) and `grpc.testing.XdsUpdateClientConfigureService` (Configure) there, while it sends
QPS RPCs a second of each configured type on one channel to TARGET, each without waiting for the others.

There is no .proto and no protoc: the messages are encoded and decoded here with a small protobuf wire codec,
written from the public field numbers, and the methods are served and called over raw bytes. Both modes log to
stderr, print nothing on stdout after "ready", and exit when their parent process dies.
"""

import argparse
import asyncio
import atexit
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from grpc_peer import xds_bootstrap  # noqa: E402  (the sibling peer's bootstrap, found through the line above)

log = logging.getLogger("xds_interop")

TEST_SERVICE = "grpc.testing.TestService"
STATS_SERVICE = "grpc.testing.LoadBalancerStatsService"
CONFIGURE_SERVICE = "grpc.testing.XdsUpdateClientConfigureService"

# RpcType enum value → (method name in TestService and rpcs_by_method, key in the accumulated stats).
RPC_TYPES = {0: ("EmptyCall", "EMPTY_CALL"), 1: ("UnaryCall", "UNARY_CALL")}
RPC_TYPE_BY_NAME = {method: value for value, (method, _) in RPC_TYPES.items()}
STATUS_BY_CODE = {code.value[0]: code for code in grpc.StatusCode}


# --- protobuf wire format -------------------------------------------------------------------------------------
# Enough of it for these messages: varints (int32, bool, enum) and length-delimited fields (string, bytes,
# messages, packed repeated). Maps are repeated entry messages {key = 1, value = 2}.

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int32 is sent as its 64-bit two's complement (ten bytes)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple:
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return n, pos


def int32(n: int) -> int:
    """A decoded varint as the signed int32 (or enum) it encodes."""
    n &= 0xFFFFFFFF
    return n - (1 << 32) if n >= 1 << 31 else n


def field_int(number: int, n: int) -> bytes:
    """An int32, bool or enum field; proto3 leaves out the default 0."""
    return varint(number << 3 | VARINT) + varint(n) if n else b""


def field_len(number: int, data: bytes) -> bytes:
    return varint(number << 3 | LEN) + varint(len(data)) + data


def field_str(number: int, s: str) -> bytes:
    return field_len(number, s.encode()) if s else b""


def map_entries(number: int, entries: dict, encode_key, encode_value) -> bytes:
    return b"".join(field_len(number, encode_key(1, k) + encode_value(2, v)) for k, v in sorted(entries.items()))


def field_msg(number: int, data: bytes) -> bytes:
    """A message field: present even when its encoding is empty."""
    return field_len(number, data)


def decode(buf: bytes) -> dict:
    """Field number → list of raw values: ints for varints, bytes for the rest."""
    fields = defaultdict(list)
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire == LEN:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated field")
        fields[number].append(value)
    return fields


def last_int(fields: dict, number: int) -> int:
    values = [v for v in fields.get(number, []) if isinstance(v, int)]
    return int32(values[-1]) if values else 0


def last_str(fields: dict, number: int) -> str:
    values = [v for v in fields.get(number, []) if isinstance(v, bytes)]
    return values[-1].decode() if values else ""


def repeated_enum(fields: dict, number: int) -> list:
    """A repeated enum, packed (one LEN field of varints) or not (one varint field each), or both mixed."""
    out = []
    for value in fields.get(number, []):
        if isinstance(value, int):
            out.append(int32(value))
            continue
        pos = 0
        while pos < len(value):
            n, pos = read_varint(value, pos)
            out.append(int32(n))
    return out


# --- messages ---------------------------------------------------------------------------------------------------


def identity(b: bytes) -> bytes:
    return b


def simple_request() -> bytes:
    return field_int(9, 1)  # fill_server_id


def simple_response(hostname: str, size: int) -> bytes:
    payload = field_len(2, bytes(size)) if size else b""  # Payload{type = COMPRESSABLE (0), body}
    return field_msg(1, payload) + field_str(4, hostname) + field_str(6, hostname)


def stats_response(by_peer: Counter, by_method: dict, failures: int) -> bytes:
    peers = map_entries(1, by_peer, field_str, field_int)
    methods = map_entries(3, by_method, field_str, lambda n, c: field_msg(n, map_entries(1, c, field_str, field_int)))
    return peers + field_int(2, failures) + methods


def accumulated_response(acc: "Accumulated") -> bytes:
    def method_stats(number: int, key: str) -> bytes:
        stats = field_int(1, acc.started[key]) + map_entries(2, acc.results[key], field_int, field_int)
        return field_msg(number, stats)

    return (
        map_entries(1, acc.started, field_str, field_int)
        + map_entries(2, acc.succeeded, field_str, field_int)
        + map_entries(3, acc.failed, field_str, field_int)
        + map_entries(4, {key: key for key in acc.started}, field_str, method_stats)
    )


# --- both modes ---------------------------------------------------------------------------------------------------

_cleanups = []


def exit_now(*_signal) -> None:
    """Runs the cleanups and exits at once, without waiting for grpc's threads or the event loop."""
    for cleanup in _cleanups:
        cleanup()
    os._exit(0)


def exit_with_parent() -> None:
    """Exits as soon as the parent process is gone, so no peer outlives a killed test; and on SIGTERM."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        exit_now()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    signal.signal(signal.SIGTERM, exit_now)


def header_values(metadata, key: str) -> list:
    return [v for k, v in (metadata or ()) if k == key]


# --- server -----------------------------------------------------------------------------------------------------


class TestServer:
    """TestService. The `hostname` header goes with the answer: in the initial metadata of an OK answer (and of a
    `keep-open` RPC), in the trailers of an error. An error must not send initial metadata first: gRPC commits an
    RPC once response headers arrive (gRFC A6), so the client would never retry it."""

    def __init__(self, hostname: str):
        self.hostname = hostname
        self.header = (("hostname", hostname),)

    async def empty_call(self, _request: bytes, context) -> bytes:
        await self.behave(context)
        await context.send_initial_metadata(self.header)
        return b""

    async def unary_call(self, request: bytes, context) -> bytes:
        await self.behave(context)
        try:
            size = max(0, last_int(decode(request), 2))  # response_size
        except ValueError as e:
            await self.fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"bad SimpleRequest: {e}")
        await context.send_initial_metadata(self.header)
        return simple_response(self.hostname, size)

    async def fail(self, context, code: grpc.StatusCode, details: str) -> None:
        await context.abort(code, details, trailing_metadata=self.header)  # raises: ends the RPC

    async def behave(self, context) -> None:
        """Follows the request's `rpc-behavior` entries in order."""
        metadata = context.invocation_metadata()
        attempts = header_values(metadata, "grpc-previous-rpc-attempts")
        for value in header_values(metadata, "rpc-behavior"):
            for entry in (e.strip() for e in value.split(",")):
                if entry and await self.apply(entry, attempts, context):
                    return

    async def apply(self, entry: str, attempts: list, context) -> bool:
        """Applies one entry; True when the RPC is to be answered OK at once."""
        behaviour = entry
        if entry.startswith("hostname="):
            host, _, behaviour = entry[len("hostname=") :].partition(" ")
            behaviour = behaviour.strip()
            if not host or not behaviour:
                await self.fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed rpc-behavior {entry!r}")
            if host != self.hostname:
                return False
        kind, _, arg = behaviour.rpartition("-")
        if behaviour == "keep-open":
            await context.send_initial_metadata(self.header)
            await asyncio.Event().wait()  # until the client cancels: grpc.aio cancels this task then
        elif kind == "sleep" and arg.isdigit():
            await asyncio.sleep(int(arg))
        elif kind == "error-code" and arg.isdigit() and int(arg) in STATUS_BY_CODE:
            if int(arg) == 0:
                return True
            await self.fail(context, STATUS_BY_CODE[int(arg)], f"rpc-behavior {entry!r} on {self.hostname}")
        elif kind == "succeed-on-retry-attempt" and arg.isdigit():
            return arg in attempts
        else:
            await self.fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"malformed rpc-behavior {entry!r}")
        return False


async def serve(port: int, hostname: str) -> None:
    test = TestServer(hostname)
    handler = grpc.method_handlers_generic_handler(
        TEST_SERVICE,
        {
            "EmptyCall": grpc.unary_unary_rpc_method_handler(test.empty_call, identity, identity),
            "UnaryCall": grpc.unary_unary_rpc_method_handler(test.unary_call, identity, identity),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    log.info("server %s serving on 127.0.0.1:%d", hostname, bound)
    print(f"ready {bound}", flush=True)
    await server.wait_for_termination()


# --- client -------------------------------------------------------------------------------------------------------


class Accumulated:
    """Totals since start, keyed EMPTY_CALL / UNARY_CALL: GetClientAccumulatedStats."""

    def __init__(self):
        self.started = Counter()
        self.succeeded = Counter()
        self.failed = Counter()
        self.results = defaultdict(Counter)  # key → {status code: count}


class Watcher:
    """The next `wanted` RPCs started after a GetClientStats arrived, and how those that completed went."""

    def __init__(self, wanted: int):
        self.remaining = wanted
        self.pending = 0
        self.by_peer = Counter()
        self.by_method = defaultdict(Counter)
        self.done = asyncio.Event()
        if wanted <= 0:
            self.done.set()

    def take(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        self.pending += 1
        return True

    def complete(self, method: str, peer: str, ok: bool) -> None:
        self.pending -= 1
        if ok and peer:  # interop semantics: an RPC counts for a peer only if it succeeded
            self.by_peer[peer] += 1
            self.by_method[method][peer] += 1
        if self.remaining == 0 and self.pending == 0:
            self.done.set()


class Config:
    """What Configure sets: the RPC types sent each tick, their metadata, and the deadline."""

    def __init__(self, types: list, metadata: dict, timeout: float):
        self.types = types
        self.metadata = metadata  # RpcType value → [(key, value)]
        self.timeout = timeout


def parse_metadata(spec: str) -> dict:
    """`EmptyCall:key:value,UnaryCall:key:value` → RpcType value → [(key, value)]."""
    out = defaultdict(list)
    for item in filter(None, (s.strip() for s in spec.split(","))):
        method, key, value = item.split(":", 2)
        out[RPC_TYPE_BY_NAME[method]].append((key, value))
    return out


class Client:
    """The load on one channel, the totals, and the GetClientStats watchers waiting on it."""

    def __init__(self, channel, config: Config, default_timeout: float):
        self.methods = {
            value: channel.unary_unary(f"/{TEST_SERVICE}/{method}", identity, identity)
            for value, (method, _) in RPC_TYPES.items()
        }
        self.config = config
        self.default_timeout = default_timeout
        self.acc = Accumulated()
        self.watchers = []
        self.tasks = set()
        self.logged_codes = set()

    async def send_forever(self, qps: float) -> None:
        """Each tick starts one RPC of every configured type, on a fixed schedule (no drift, no waiting)."""
        interval, start, tick = 1.0 / qps, time.monotonic(), 0
        while True:
            for rpc_type in list(self.config.types):
                task = asyncio.get_running_loop().create_task(self.one(rpc_type))
                self.tasks.add(task)
                task.add_done_callback(self.finished)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * interval - time.monotonic()))

    def finished(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception():  # a bug here, not an RPC failure: say so loudly
            log.error("RPC task failed", exc_info=task.exception())

    async def one(self, rpc_type: int) -> None:
        method, key = RPC_TYPES[rpc_type]
        config = self.config
        request = simple_request() if method == "UnaryCall" else b""
        headers = tuple(config.metadata.get(rpc_type, ()))
        call = self.methods[rpc_type](request, metadata=headers, timeout=config.timeout)
        self.acc.started[key] += 1
        watchers = [w for w in self.watchers if w.take()]
        details = ""
        try:
            await call
            code, metadata = grpc.StatusCode.OK, await call.initial_metadata()
        except grpc.aio.AioRpcError as e:  # carries what metadata the server sent, if any
            code, details = e.code(), e.details()
            metadata = tuple(e.initial_metadata() or ()) + tuple(e.trailing_metadata() or ())
        peer = next(iter(header_values(metadata, "hostname")), "")
        number = code.value[0]
        self.acc.results[key][number] += 1
        (self.acc.succeeded if code == grpc.StatusCode.OK else self.acc.failed)[key] += 1
        if code != grpc.StatusCode.OK and (key, number) not in self.logged_codes:
            self.logged_codes.add((key, number))
            log.info("first %s of %s from %s: %s", code.name, method, peer or "no peer", details)
        for watcher in watchers:
            watcher.complete(method, peer, code == grpc.StatusCode.OK)

    async def get_client_stats(self, request: bytes, _context) -> bytes:
        fields = decode(request)
        wanted, timeout = last_int(fields, 1), last_int(fields, 2)
        watcher = Watcher(wanted)
        self.watchers.append(watcher)
        try:
            await asyncio.wait_for(watcher.done.wait(), timeout=max(0, timeout))
        except asyncio.TimeoutError:
            pass
        finally:
            self.watchers.remove(watcher)
        failures = wanted - sum(watcher.by_peer.values())  # failed, no peer, or not completed (or not started)
        return stats_response(watcher.by_peer, watcher.by_method, failures)

    async def get_client_accumulated_stats(self, _request: bytes, _context) -> bytes:
        return accumulated_response(self.acc)

    async def configure(self, request: bytes, _context) -> bytes:
        fields = decode(request)
        types = [t for t in repeated_enum(fields, 1) if t in RPC_TYPES]
        metadata = defaultdict(list)
        for raw in fields.get(2, []):
            entry = decode(raw)
            metadata[last_int(entry, 1)].append((last_str(entry, 2), last_str(entry, 3)))
        timeout = last_int(fields, 3) or self.default_timeout
        self.config = Config(types, metadata, timeout)
        log.info("configured: types %s, metadata %s, timeout %ss", types, dict(metadata), timeout)
        return b""


def use_bootstrap(args: argparse.Namespace) -> None:
    """Points grpcio's xDS resolver at a bootstrap naming Sluice (before any channel exists)."""
    boot = xds_bootstrap(args.xds, args.node_id, args.namespace)
    with tempfile.NamedTemporaryFile("w", prefix="xds-interop-", suffix=".json", delete=False) as f:
        json.dump(boot, f)
    os.environ["GRPC_XDS_BOOTSTRAP"] = f.name

    def remove() -> None:
        try:
            os.unlink(f.name)
        except FileNotFoundError:
            pass

    _cleanups.append(remove)
    atexit.register(remove)  # a normal exit; SIGTERM and the parent's death run _cleanups; only SIGKILL leaks it


async def run_client(args: argparse.Namespace) -> None:
    if args.xds:
        use_bootstrap(args)
    types = [RPC_TYPE_BY_NAME[m.strip()] for m in args.rpc.split(",") if m.strip()]
    config = Config(types, parse_metadata(args.metadata), args.rpc_timeout_sec)
    channel = grpc.aio.insecure_channel(args.server)
    client = Client(channel, config, args.rpc_timeout_sec)
    handlers = (
        grpc.method_handlers_generic_handler(
            STATS_SERVICE,
            {
                "GetClientStats": grpc.unary_unary_rpc_method_handler(client.get_client_stats, identity, identity),
                "GetClientAccumulatedStats": grpc.unary_unary_rpc_method_handler(
                    client.get_client_accumulated_stats, identity, identity
                ),
            },
        ),
        grpc.method_handlers_generic_handler(
            CONFIGURE_SERVICE, {"Configure": grpc.unary_unary_rpc_method_handler(client.configure, identity, identity)}
        ),
    )
    stats = grpc.aio.server()
    stats.add_generic_rpc_handlers(handlers)
    bound = stats.add_insecure_port(f"127.0.0.1:{args.stats_port}")
    await stats.start()
    log.info("client to %s at %s qps of %s; stats on 127.0.0.1:%d", args.server, args.qps, args.rpc, bound)
    print(f"ready {bound}", flush=True)
    await client.send_forever(args.qps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--hostname", required=True, help="sent back in the `hostname` header and SimpleResponse")
    c = sub.add_parser("client")
    c.add_argument("--server", required=True, help="target as-is: xds:///NAME:PORT, or HOST:PORT without xDS")
    c.add_argument("--stats-port", type=int, default=0)
    c.add_argument("--qps", type=float, default=100.0, help="ticks a second; each sends one RPC of every type")
    c.add_argument("--rpc", default="UnaryCall", help="EmptyCall, UnaryCall, or both comma-separated")
    c.add_argument("--metadata", default="", help="METHOD:KEY:VALUE,... sent with that method's RPCs")
    c.add_argument("--rpc-timeout-sec", type=float, default=20.0)
    c.add_argument("--xds", help="Sluice's xDS address: writes a bootstrap and sets GRPC_XDS_BOOTSTRAP")
    c.add_argument("--node-id", default="xds-interop-client")
    c.add_argument("--namespace", default="default")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="xds_interop %(levelname)s %(message)s")
    exit_with_parent()
    try:
        asyncio.run(serve(args.port, args.hostname) if args.mode == "server" else run_client(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
