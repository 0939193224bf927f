#!/usr/bin/env python3
"""A stand-in for a browser's push service, on loopback, for intercomd's
Web Push tests. It checks what the hub sends with implementations of its
own: py_vapid for the VAPID token (RFC 8292), http_ece for the payload
(RFC 8291 / RFC 8188 aes128gcm).

It holds one user agent key pair and auth secret, made at start. Every
POST to /push/<behaviour>/<name> is one push; <behaviour> says what it
answers: a status (201, 404, 410, 500, ...) or sleep-<seconds> (then 201).
"received_ms" is the wall clock (Unix ms) when the request's headers were
in, for benchmarks.
Each push is recorded before it is answered; GET /log returns the records
as a JSON list (and --log-file gets one JSON line each):

    {"path", "received_ms", "status_returned", "ttl", "urgency", "topic",
     "content_encoding", "content_type", "vapid": {"ok", "error", "claims",
     "k"}, "plaintext_b64", "plaintext", "error"}

The first line on stdout is JSON: {"origin": "http://127.0.0.1:PORT",
"p256dh": ..., "auth": ...}; GET /subscription/<behaviour>/<name>
returns a whole subscription (PushSubscription.toJSON()) for that path.

    push_service.py [--listen 127.0.0.1:0] [--cert PEM --key PEM]
                    [--host-name localhost] [--log-file F]
"""

import argparse
import base64
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import jwt as vapid_jwt

MAX_BODY = 8192
# RFC 8292 §2: a token must not expire more than 24 hours ahead.
MAX_EXP_AHEAD = 24 * 3600


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class State:
    def __init__(self):
        self.ua_private = ec.generate_private_key(ec.SECP256R1())
        self.ua_public = self.ua_private.public_key().public_bytes(
            Encoding.X962, PublicFormat.UncompressedPoint
        )
        self.auth = os.urandom(16)
        self.origin = None
        self.log = []
        self.log_file = None
        self.lock = threading.Lock()


def check_vapid(header, origin):
    """The claims if the Authorization header is a valid VAPID token for
    this origin, else raises ValueError with why."""
    if not header:
        raise ValueError("no Authorization header")
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError("scheme is not vapid: " + scheme)
    parts = {}
    for item in params.split(","):
        key, _, value = item.strip().partition("=")
        parts[key.strip()] = value.strip()
    if "t" not in parts or "k" not in parts:
        raise ValueError("t or k missing")
    token, k = parts["t"], parts["k"]
    head = json.loads(unb64url(token.split(".")[0]))
    if head.get("alg") != "ES256":
        raise ValueError("alg is not ES256")
    try:
        claims = vapid_jwt.decode(token, k)
    except Exception as e:  # InvalidSignature and friends
        raise ValueError("signature does not verify with k: %r" % e)
    if claims.get("aud") != origin:
        raise ValueError("aud %r is not %r" % (claims.get("aud"), origin))
    exp = claims.get("exp")
    now = time.time()
    if not isinstance(exp, int) or exp <= now or exp > now + MAX_EXP_AHEAD:
        raise ValueError("exp %r is not within 24 h from now" % exp)
    if not claims.get("sub"):
        raise ValueError("sub missing")
    return claims, k


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", ctype="text/plain"):
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sender gave up (its timeout)

    def behaviour(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        return parts[1] if len(parts) >= 3 else None

    def do_GET(self):
        st = self.state
        if self.path == "/log":
            with st.lock:
                body = json.dumps(st.log).encode()
            return self.reply(200, body, "application/json")
        if self.path.startswith("/subscription/"):
            sub = {
                "endpoint": st.origin + "/push/" + self.path[len("/subscription/"):],
                "keys": {"p256dh": b64url(st.ua_public), "auth": b64url(st.auth)},
            }
            return self.reply(200, json.dumps(sub).encode(), "application/json")
        self.reply(404)

    def do_POST(self):
        received_ms = time.time() * 1000
        st = self.state
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return self.reply(413, b"payload too large")
        body = self.rfile.read(length)
        rec = {
            "path": self.path,
            "received_ms": received_ms,
            "ttl": self.headers.get("TTL"),
            "urgency": self.headers.get("Urgency"),
            "topic": self.headers.get("Topic"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "content_type": self.headers.get("Content-Type"),
            "vapid": {"ok": False, "error": None, "claims": None, "k": None},
            "plaintext_b64": None,
            "plaintext": None,
            "error": None,
        }
        behaviour = self.behaviour()
        status = 201
        try:
            claims, k = check_vapid(self.headers.get("Authorization"), st.origin)
            rec["vapid"].update(ok=True, claims=claims, k=k)
        except Exception as e:
            rec["vapid"]["error"] = str(e)
            status = 403
        if status == 201:
            try:
                if rec["content_encoding"] != "aes128gcm":
                    raise ValueError("Content-Encoding is not aes128gcm")
                if rec["ttl"] is None:
                    raise ValueError("no TTL header")
                plain = http_ece.decrypt(
                    body,
                    private_key=st.ua_private,
                    auth_secret=st.auth,
                    version="aes128gcm",
                )
                rec["plaintext_b64"] = b64url(plain)
                rec["plaintext"] = plain.decode("utf-8", "replace")
            except Exception as e:
                rec["error"] = "cannot decrypt: %r" % e
                status = 400
        if status == 201 and behaviour:
            if behaviour.startswith("sleep-"):
                time.sleep(float(behaviour[len("sleep-"):]))
            elif behaviour.isdigit():
                status = int(behaviour)
        rec["status_returned"] = status
        with st.lock:
            st.log.append(rec)
            if st.log_file:
                with open(st.log_file, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        text = b"" if status < 300 else ("refused with %d\n" % status).encode()
        self.reply(status, text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--cert", help="PEM certificate chain: serve https")
    ap.add_argument("--key", help="PEM private key for --cert")
    ap.add_argument("--host-name", help="the host in the origin (default: the address)")
    ap.add_argument("--log-file", help="also append each record to this file (JSON lines)")
    args = ap.parse_args()
    host, _, port = args.listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        sys.exit("push_service: listens on loopback only")
    state = State()
    state.log_file = args.log_file
    Handler.state = state
    server = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)
    server.daemon_threads = True
    scheme = "http"
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    state.origin = "%s://%s:%d" % (scheme, args.host_name or host, server.server_address[1])
    print(
        json.dumps(
            {"origin": state.origin, "p256dh": b64url(state.ua_public), "auth": b64url(state.auth)}
        ),
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
