"""A real HTTPS client for tests: Python's ssl (OpenSSL) and http.client.

    https_client.py HOST PORT CAFILE < requests.json > answers.json

Each request is {"method", "path", "headers": {...}, "body": "text" | "repeat": [text, count], "cafile": optional
override}. The server's certificate is verified against CAFILE (chain and host name HOST); each answer is
{"status", "headers", "body"} or {"error"} when the connection or the TLS handshake fails.
"""

import http.client
import json
import ssl
import sys


def ask(host, port, cafile, req):
    context = ssl.create_default_context(cafile=req.get("cafile", cafile))
    body = req.get("body")
    if "repeat" in req:
        text, count = req["repeat"]
        body = text * count
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=20)
    try:
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
    requests = json.load(sys.stdin)
    json.dump([ask(host, port, cafile, r) for r in requests], sys.stdout)


if __name__ == "__main__":
    main()
