"""``Idempotency-Key`` on POST: a client that lost an answer asks again with the same key and gets
the first answer, not a 409 for the registration it made itself.

The record of each key lives in a JetStream key-value bucket (``IDEMPOTENCY``), so every replica of
the ingress sees it and it outlives a restart; the bucket's TTL is the window
(``Settings.idempotency_seconds``, a day by default). A key is scoped to the caller's credential
(the sha256 of the ``Authorization`` header: the record is looked up before the token is checked),
so two callers cannot see or block each other's; a client that renews its JWT between two tries
starts afresh. The answer is kept
encrypted with a key derived from the caller's token and the idempotency key, because some answers
are secrets shown once (an issued API token): the bucket alone reveals none of them.

- A new key is claimed (an atomic create) before the request runs, then holds the answer.
- The same key and the same request (method, path, query, body) again: the first answer, with
  ``Idempotent-Replayed: true``. A different request under a used key: 422.
- The same key while the first request still runs: 409 with ``Retry-After``; a claim older than
  ``lease`` seconds (its ingress died) is taken over.
- Answers that retrying can change (5xx, 401, 408, 429) are not kept: the key is released.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import nats.errors
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from services.ingress.edge import header, replay

log = logging.getLogger("medperf.ingress.idempotency")

BUCKET = "IDEMPOTENCY"
HEADER = b"idempotency-key"
#: What the key may be: printable ASCII, as in the IETF draft's examples (UUIDs, ULIDs).
MAX_KEY_LENGTH = 255
#: Answers larger than this are not kept (none of the POST routes answers anything near it).
MAX_KEPT_BODY = 64 * 1024
NOT_KEPT = frozenset({401, 408, 429})
Scope = dict[str, Any]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Idempotency:
    def __init__(self, kv: KeyValue, lease: float) -> None:
        self._kv = kv
        self._lease = lease

    @classmethod
    async def open(cls, connection: Client, window: float, lease: float, replicas: int = 1) -> Idempotency:
        js = connection.jetstream()
        try:
            kv = await js.key_value(BUCKET)
        except BucketNotFoundError:
            config = KeyValueConfig(
                bucket=BUCKET,
                ttl=window,
                history=1,
                storage=StorageType.FILE,
                replicas=replicas,
                max_value_size=2 * MAX_KEPT_BODY,
                description="the first answer to each Idempotency-Key, per caller, for the window",
            )
            kv = await js.create_key_value(config)
        return cls(kv, lease)

    async def handle(self, app: Any, scope: Scope, receive: Any, send: Any, key: bytes) -> None:
        """Run ``app`` for a POST carrying ``key``, or answer as its earlier run did."""
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not all(33 <= c <= 126 for c in key):
            await _answer(send, Answer(400, [], _error("Idempotency-Key: give 1 to 255 printable ASCII characters")))
            return
        body = (await receive()).get("body", b"")  # the whole body: LimitedBodies read it within the limits
        authorization = header(scope, b"authorization") or b""
        record = hashlib.sha256(b"%s\n%s" % (hashlib.sha256(authorization).digest(), key)).hexdigest()
        fingerprint = hashlib.sha256(
            b"\n".join([scope["method"].encode(), scope["raw_path"], scope["query_string"], body])
        ).hexdigest()
        sealing = AESGCM(hashlib.sha256(b"medperf-idempotency\0%s\0%s" % (authorization, key)).digest())
        try:
            claimed, earlier = await self._claim(record, fingerprint)
        except (nats.errors.Error, OSError) as exc:
            log.warning("idempotency store unavailable: %s", exc)
            message = "the idempotency store cannot be reached; retry shortly with the same Idempotency-Key"
            await _answer(send, Answer(503, [(b"retry-after", b"1")], _error(message)))
            return
        if not claimed:
            await _answer(send, self._earlier(earlier, fingerprint, sealing))
            return
        try:
            answer = await _run(app, scope, body, receive, send)
        except BaseException:
            await self._keep(record, fingerprint, None, sealing)
            raise
        await self._keep(record, fingerprint, answer, sealing)

    async def _claim(self, record: str, fingerprint: str) -> tuple[bool, dict[str, Any]]:
        """Take the key (True), or return what holds it (False, its record)."""
        pending = json.dumps({"state": "running", "fingerprint": fingerprint, "since": time.time()}).encode()
        try:
            await self._kv.create(record, pending)
            return True, {}
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await self._kv.get(record)
        except KeyNotFoundError:  # released between the two calls: try once more
            await self._kv.create(record, pending)
            return True, {}
        earlier = json.loads(entry.value or b"{}")
        if earlier.get("state") == "running" and time.time() - earlier.get("since", 0) > self._lease:
            try:  # its ingress died while running it: the request's outcome is unknown, run it again
                await self._kv.update(record, pending, last=entry.revision)
                return True, {}
            except KeyWrongLastSequenceError:  # someone else took it over first
                pass
        return False, earlier

    def _earlier(self, earlier: dict[str, Any], fingerprint: str, sealing: AESGCM) -> Answer:
        if earlier.get("fingerprint") != fingerprint:
            message = "this Idempotency-Key was used for a different request; use a new key for a new request"
            return Answer(422, [], _error(message))
        if earlier.get("state") == "running":
            message = "a request with this Idempotency-Key is still running; retry shortly with the same key"
            return Answer(409, [(b"retry-after", b"1")], _error(message))
        sealed = base64.b64decode(earlier["sealed"])
        kept = json.loads(sealing.decrypt(sealed[:12], sealed[12:], None))
        headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in kept["headers"]]
        return Answer(kept["status"], [*headers, (b"idempotent-replayed", b"true")], base64.b64decode(kept["body"]))

    async def _keep(self, record: str, fingerprint: str, answer: Answer | None, sealing: AESGCM) -> None:
        try:
            if answer is None or answer.status >= 500 or answer.status in NOT_KEPT or len(answer.body) > MAX_KEPT_BODY:
                await self._kv.delete(record)  # a retry may fare differently: let it run
                return
            kept = {
                "status": answer.status,
                "headers": [(n.decode("latin-1"), v.decode("latin-1")) for n, v in answer.headers],
                "body": base64.b64encode(answer.body).decode(),
            }
            nonce = os.urandom(12)
            sealed = nonce + sealing.encrypt(nonce, json.dumps(kept).encode(), None)
            value = {"state": "done", "fingerprint": fingerprint, "sealed": base64.b64encode(sealed).decode()}
            await self._kv.put(record, json.dumps(value).encode())
        except (nats.errors.Error, OSError) as exc:  # the answer went out; a repeat will run again
            log.warning("could not record the answer to an Idempotency-Key: %s", exc)


class IdempotentPosts:
    """ASGI middleware: POSTs with an ``Idempotency-Key`` go through ``holder.idempotency`` (set
    once the ingress is connected to the broker); everything else passes straight through."""

    def __init__(self, app: Any, holder: Any) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        store: Idempotency | None = getattr(self.holder, "idempotency", None)
        key = header(scope, HEADER) if scope["type"] == "http" and scope["method"] == "POST" else None
        if key is None or store is None:
            await self.app(scope, receive, send)
        else:
            await store.handle(self.app, scope, receive, send, key)


async def _run(app: Any, scope: Scope, body: bytes, receive: Any, send: Any) -> Answer | None:
    """Run the request, passing its answer on while keeping a copy (None: no answer was sent)."""
    status, headers, chunks = 0, [], []

    async def keep(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(n, v) for n, v in message.get("headers", []) if n.lower() not in (b"content-length", b"date")]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
        await send(message)

    await app(scope, replay(body, receive), keep)
    return Answer(status, headers, b"".join(chunks)) if status else None


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _answer(send: Any, answer: Answer) -> None:
    headers = list(answer.headers)
    if not any(name == b"content-type" for name, _ in headers):
        headers.insert(0, (b"content-type", b"application/json"))
    headers.append((b"content-length", str(len(answer.body)).encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
