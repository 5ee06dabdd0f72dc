"""A real HTTPS client for tests: Python's ssl (OpenSSL) and http.client.

    https_client.py HOST PORT CAFILE [ADDRESS] < requests.json > answers.json

HOST is the TLS server name (SNI) and the name verified; ADDRESS (default HOST) is where to connect.

Each request is {"method", "path", "headers": {...}, "body": "text" | "repeat": [text, count], "cafile": optional
override}. The server's certificate is verified against CAFILE (chain and host name HOST); each answer is
{"status", "headers", "body"} or {"error"} when the connection or the TLS handshake fails.
"""

import http.client
import json
import socket
import ssl
import sys


def ask(host, port, cafile, req, address=None):
    context = ssl.create_default_context(cafile=req.get("cafile", cafile))
    body = req.get("body")
    if "repeat" in req:
        text, count = req["repeat"]
        body = text * count
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=20)
    try:
        if address:
            raw = socket.create_connection((address, port), timeout=20)
            conn.sock = context.wrap_socket(raw, server_hostname=host)
        conn.request(req.get("method", "POST"), req["path"], body=body, headers=req.get("headers", {}))
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        peer = conn.sock.getpeercert() if conn.sock else {}
        return {
            "status": resp.status,
            "headers": {k.lower(): v for k, v in resp.getheaders()},
            "body": data,
            "peer_san": [v for (k, v) in peer.get("subjectAltName", ())],
        }
    except (OSError, ssl.SSLError, http.client.HTTPException) as e:
        return {"error": f"{type(e).__name__}: {e}"}
    finally:
        conn.close()


def main():
    host, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    address = sys.argv[4] if len(sys.argv) > 4 else None
    requests = json.load(sys.stdin)
    json.dump([ask(host, port, cafile, r, address) for r in requests], sys.stdout)


if __name__ == "__main__":
    main()
