#!/usr/bin/env python3
"""A webhook receiver for Gatehouse's integration tests.

Listens on 127.0.0.1 (port from --port, 0 for any), prints "READY <port>" when ready, and
appends one JSON line per request to --out: the path, whether a Standard Webhooks signature
verified (with the secret in $WEBHOOK_SECRET, "whsec_" + base64), and the body. The signature
is checked here independently of the gateway: HMAC-SHA256 over "id.timestamp.body", base64,
in "webhook-signature" as "v1,<sig>" (several may be listed), timestamp within 5 minutes.
With --fail-first, the first delivery of every webhook-id (or the first request to /slack) is
answered 500, so the sender must retry.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEEN = set()


def verify(headers, body):
    secret = os.environ.get("WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        return False, "no secret"
    key = base64.b64decode(secret[len("whsec_"):])
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature", "")
    if not msg_id or not ts:
        return False, "missing headers"
    if abs(time.time() - int(ts)) > 300:
        return False, "stale timestamp"
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for sig in sigs.split():
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True, "ok"
    return False, "bad signature"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        key = self.headers.get("webhook-id") or self.path
        if ARGS.fail_first and key not in SEEN:
            SEEN.add(key)
            self.send_response(500)
            self.end_headers()
            return
        verified, why = verify(self.headers, body) if self.path != "/slack" else (None, "unsigned")
        with open(ARGS.out, "a", encoding="utf-8") as f:
            f.write(json.dumps({
                "path": self.path,
                "verified": verified,
                "why": why,
                "id": self.headers.get("webhook-id"),
                "body": json.loads(body or b"null"),
            }) + "\n")
        self.send_response(200 if verified is not False else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail-first", action="store_true")
    ARGS = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)
