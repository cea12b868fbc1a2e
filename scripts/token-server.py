#!/usr/bin/env python3
"""A registry token server for tests (the Docker token auth spec, as docker/distribution
verifies it): checks Basic credentials, answers with an RS256 JWT for the scopes asked,
signed with openssl and carrying its certificate in `x5c`.

usage: token-server.py PORT KEY CERT USER:PASSWORD SERVICE ISSUER LOG
Each issued token is logged as one line `issued <user> <scope…>` to LOG.
"""

import base64
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

port, key, cert, creds, service, issuer, log = sys.argv[1:8]
user, password = creds.split(":", 1)
der = subprocess.run(
    ["openssl", "x509", "-in", cert, "-outform", "DER"], check=True, capture_output=True
).stdout


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(claims: dict) -> str:
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    signing = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", key], input=signing, check=True, capture_output=True
    ).stdout
    return signing.decode() + "." + b64url(sig)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        ok = False
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode(errors="replace")
            ok = given == f"{user}:{password}"
        if url.path != "/token" or not ok or q.get("service", [""])[0] != service:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="bulkhead-token"')
            self.end_headers()
            return
        access = []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                kind, name, actions = one.split(":", 2) if one.count(":") >= 2 else ("", "", "")
                if kind == "repository":
                    access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        token = sign(
            {
                "iss": issuer,
                "sub": user,
                "aud": service,
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": b64url(os.urandom(12)),
                "access": access,
            }
        )
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        with open(log, "a") as f:
            f.write("issued " + user + " " + " ".join(q.get("scope", [])) + "\n")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
