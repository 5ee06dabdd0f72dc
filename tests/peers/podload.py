#!/usr/bin/env python3
"""Load from inside a pod: GETs a URL by Service name with a plain HTTP client (keep-alive, one connection per
worker) and counts the answers by status and by the reviews version in productpage's JSON.

    podload.py --url http://productpage:9080/productpage --count 2000 --workers 4
    podload.py --url ... --rate 120 --stop-file /tmp/stop      # paced, until the file exists

Prints one JSON line on stdout at the end: total, ok, failed, versions {v1: n, ...}, errors (the first 20), seconds,
rate, and per_second (requests answered in each whole second). A request fails when the answer is not 200 or does
not arrive in 10 s.
"""

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

TIMEOUT = 10.0


class Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total = 0
        self.ok = 0
        self.versions: dict[str, int] = {}
        self.errors: list[str] = []
        self.failed = 0
        self.per_second: dict[int, int] = {}

    def add(self, status: int, body: bytes, error: str, started: float) -> None:
        version = None
        if status == 200:
            try:
                version = json.loads(body).get("reviews", {}).get("version")
            except ValueError:
                version = None
        with self.lock:
            self.total += 1
            second = int(time.monotonic() - started)
            self.per_second[second] = self.per_second.get(second, 0) + 1
            if status == 200:
                self.ok += 1
                key = version or "none"
                self.versions[key] = self.versions.get(key, 0) + 1
            else:
                self.failed += 1
                if len(self.errors) < 20:
                    self.errors.append(error or f"HTTP {status}: {body[:200].decode(errors='replace')}")


def worker(url, headers, counts, started, next_request, stop) -> None:
    parts = urllib.parse.urlsplit(url)
    host, _, port = parts.netloc.partition(":")
    conn = None
    while True:
        if not next_request():
            break
        if conn is None:
            conn = http.client.HTTPConnection(host, int(port or 80), timeout=TIMEOUT)
        try:
            conn.request("GET", parts.path or "/", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            counts.add(resp.status, body, "", started)
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            counts.add(0, b"", f"{type(e).__name__}: {e}", started)
            conn.close()
            conn = None
        if stop.is_set():
            break
    if conn is not None:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, help="this many requests, as fast as the workers go")
    parser.add_argument("--rate", type=float, help="requests per second in all, until --stop-file exists")
    parser.add_argument("--stop-file")
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--header", action="append", default=[], help="NAME: VALUE (repeatable)")
    args = parser.parse_args()
    headers = {}
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()

    counts = Counts()
    started = time.monotonic()
    stop = threading.Event()
    lock = threading.Lock()
    issued = [0]

    def next_request() -> bool:
        with lock:
            n = issued[0]
            issued[0] += 1
        if args.count is not None:
            return n < args.count
        if time.monotonic() - started > args.max_seconds or (args.stop_file and os.path.exists(args.stop_file)):
            stop.set()
            return False
        # Paced: request n goes out no earlier than n / rate seconds after the start.
        delay = started + n / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return True

    threads = [
        threading.Thread(target=worker, args=(args.url, headers, counts, started, next_request, stop), daemon=True)
        for _ in range(args.workers)
    ]
    print(f"ready {os.getpid()}", file=sys.stderr, flush=True)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - started
    whole = int(seconds)
    summary = {
        "total": counts.total,
        "ok": counts.ok,
        "failed": counts.failed,
        "versions": counts.versions,
        "errors": counts.errors,
        "seconds": round(seconds, 3),
        "rate": round(counts.total / seconds, 1) if seconds else 0,
        "per_second": [counts.per_second.get(s, 0) for s in range(whole)],
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
