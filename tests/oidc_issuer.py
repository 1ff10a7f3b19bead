"""An OpenID Connect identity provider for tests: real RSA and EC signing keys, real JWTs signed
with PyJWT, and its JWKS served over HTTP on 127.0.0.1 by a server in its own threads, which can be
told to misbehave the way a sick issuer does: accept and never answer, or answer a byte at a time.
It also does OAuth 2.0's device authorization grant (RFC 8628), as Auth0 does for MedPerf's CLI:
discovery, device codes, and a token endpoint that answers ``authorization_pending`` until the
test, playing the user at a browser, approves the code (``approve``)."""

from __future__ import annotations

import http.server
import json
import secrets
import threading
import time
import urllib.parse
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

AUDIENCE = "medperf-api"
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: serve: answer at once; slow: answer after SLOW_SECONDS; silent: accept, read the request, never
#: answer; trickle: answer one byte every TRICKLE_SECONDS; error: HTTP 500.
Mode = Literal["serve", "slow", "silent", "trickle", "error"]
TRICKLE_SECONDS = 0.5
SLOW_SECONDS = 0.3
HUGE_BYTES = 1 << 20


class Issuer:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.other = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # not published
        self.published: dict[str, Any] = {"rsa-1": self.rsa, "ec-1": self.ec}
        self.mode: Mode = "serve"
        #: How the device-grant endpoints answer: serve, trickle (a byte every TRICKLE_SECONDS) or
        #: huge (a JSON answer of HUGE_BYTES).
        self.device_mode: Literal["serve", "trickle", "huge"] = "serve"
        self.requests = 0  # JWKS requests received
        self.devices: dict[str, dict[str, Any]] = {}  # device code -> user code, client, approved email
        self.polls = 0  # token requests with a device code
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

    def approve(self, user_code: str, email: str = "dana@hospital.example") -> None:
        """The user confirmed ``user_code`` in a browser, logged in as ``email``."""
        for device in self.devices.values():
            if device["user_code"] == user_code:
                device["email"] = email
                return
        raise KeyError(user_code)

    def _device_answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != DEVICE_GRANT:
            return 400, {"error": "unsupported_grant_type"}
        self.polls += 1
        device = self.devices.get(form.get("device_code", ""))
        if device is None or device["client_id"] != form.get("client_id"):
            return 400, {"error": "invalid_grant"}
        if device["email"] is None:
            return 400, {"error": "authorization_pending"}
        del self.devices[form["device_code"]]  # a device code buys one token
        return 200, {"access_token": self.token(email=device["email"]), "token_type": "Bearer", "expires_in": 300}

    def close(self) -> None:
        self._closing.set()  # releases the handlers that are hanging
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path == "/oauth/device/code":
                    device_code, user_code = secrets.token_urlsafe(16), secrets.token_hex(4).upper()
                    issuer.devices[device_code] = {
                        "user_code": user_code,
                        "client_id": form.get("client_id"),
                        "email": None,
                    }
                    self._json(
                        200,
                        {
                            "device_code": device_code,
                            "user_code": user_code,
                            "verification_uri": f"{issuer.url}/activate",
                            "verification_uri_complete": f"{issuer.url}/activate?user_code={user_code}",
                            "expires_in": 60,
                            "interval": 0.05,
                        },
                    )
                elif self.path == "/oauth/token":
                    self._json(*issuer._device_answer(form))
                else:
                    self.send_error(404)

            def _json(self, status: int, answer: dict[str, Any]) -> None:
                if issuer.device_mode == "huge":
                    answer = {**answer, "padding": "x" * HUGE_BYTES}
                body = json.dumps(answer).encode()
                if issuer.device_mode == "trickle":
                    head = f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n\r\n".encode()
                    self._trickle(head + body)
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == DISCOVERY_PATH:
                    self._json(
                        200,
                        {
                            "issuer": issuer.url,
                            "jwks_uri": issuer.url + JWKS_PATH,
                            "device_authorization_endpoint": f"{issuer.url}/oauth/device/code",
                            "token_endpoint": f"{issuer.url}/oauth/token",
                        },
                    )
                    return
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
