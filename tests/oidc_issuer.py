"""An OpenID Connect identity provider for tests: real RSA and EC signing keys, real JWTs signed
with PyJWT, and its JWKS served over HTTP on 127.0.0.1 by a server in its own threads, which can be
told to misbehave the way a sick issuer does: accept and never answer, or answer a byte at a time."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "medperf-api"
JWKS_PATH = "/.well-known/jwks.json"
#: serve: answer at once; slow: answer after SLOW_SECONDS; silent: accept, read the request, never
#: answer; trickle: answer one byte every TRICKLE_SECONDS; error: HTTP 500.
Mode = Literal["serve", "slow", "silent", "trickle", "error"]
TRICKLE_SECONDS = 0.5
SLOW_SECONDS = 0.3


class Issuer:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not published
        self.published: dict[str, Any] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.mode: Mode = "serve"
        self.requests = 0  # JWKS requests received
        self._closing = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def jwks(self) -> bytes:
        keys = []
        for kid, private in self.published.items():
            algorithm, alg = (
                (RSAAlgorithm, "RS256") if isinstance(private, rsa.RSAPrivateKey) else (ECAlgorithm, "ES256")
            )
            keys.append({**algorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"})
        return json.dumps({"keys": keys}).encode()

    def rotate(self, kid: str) -> None:
        """Publish the hitherto unpublished key under ``kid`` (the issuer rotated its keys)."""
        self.published[kid] = self.other

    def token(self, key: str = "rsa", kid: str | None = None, headers: dict | None = None, **claims: Any) -> str:
        """A signed JWT for dana, whose email the issuer verified; ``claims`` override (None drops one)."""
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "email": "dana@hospital.example",
            "email_verified": True,
            "iat": now,
            "exp": now + 300,
        }
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        signer, algorithm, default_kid = {
            "rsa": (self.rsa, "RS256", "rsa-1"),
            "ec": (self.ec, "ES256", "ec-1"),
            "other": (self.other, "RS256", "rsa-1"),  # claims a published kid, signed by another key
        }[key]
        return jwt.encode(payload, signer, algorithm=algorithm, headers={"kid": kid or default_kid, **(headers or {})})

    def close(self) -> None:
        self._closing.set()  # releases the handlers that are hanging
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                issuer.requests += 1
                mode = issuer.mode
                if mode == "silent":
                    issuer._closing.wait(120)
                    self.close_connection = True
                elif mode == "trickle":
                    self._trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + issuer.jwks())
                elif mode == "error":
                    self.send_error(500, "the identity provider is having a bad day")
                else:
                    if mode == "slow" and issuer._closing.wait(SLOW_SECONDS):
                        return
                    body = issuer.jwks()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def _trickle(self, answer: bytes) -> None:
                for byte in answer:
                    if issuer._closing.wait(TRICKLE_SECONDS):
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:  # the client gave up
                        return

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
