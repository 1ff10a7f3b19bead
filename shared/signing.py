"""Signed results: the canonical bytes a site signs, and Ed25519 signing and verification.

A site agent holds a private key that never leaves its work directory; its public key is
registered with the site in the registry (``SiteKeyRegistered``). Every ``ResultReported`` carries
a signature over ``canonical_result`` and the id of the key, and the aggregator verifies it before
a result can reach a board. The broker already limits a site to its own subjects; the signature
adds what credentials cannot: a result can be checked by anyone holding the public key, long
after it was published, and no relay, operator or database between the site and the board can
change a metric without it showing.

Pure functions and one small key class, so that both ends (and tests) share exactly one encoding.
Keys are made, kept (PEM) and used to sign with ``cryptography``; signatures are verified with
libsodium (PyNaCl), whose Ed25519 verification costs ~105 us here against ~175 us: the aggregator
verifies every result, and verification is most of a result's cost (bench/aggregator.py).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import uuid
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from shared.private_files import write_private

if TYPE_CHECKING:
    from shared.events import CompatibilityReport, ResultReported

#: The fields a signature covers: everything a board shows of a result, plus the event's identity
#: and time (so a signature cannot be lifted onto another event or moved in time).
SIGNED_FIELDS = (
    "benchmark_id",
    "model_id",
    "dataset_id",
    "site",
    "container_digests",
    "dataset_hash",
    "metrics",
    "partial",
    "event_id",
    "occurred_at",
)


class BadKey(ValueError):
    """A public key or signature that is not well-formed Ed25519 material."""


def canonical_result(event: ResultReported) -> bytes:
    """The bytes a site signs: sorted-key, whitespace-free JSON of ``SIGNED_FIELDS``.

    Every value is normalised to the form it has after a JSON round trip (floats as floats, the
    time in UTC with microseconds, the event id as text), so the publisher and a consumer that
    decoded the message produce the same bytes."""
    fields: dict[str, Any] = {
        "benchmark_id": event.benchmark_id,
        "model_id": event.model_id,
        "dataset_id": event.dataset_id,
        "site": event.site,
        "container_digests": dict(event.container_digests),
        "dataset_hash": event.dataset_hash,
        "metrics": {name: float(value) for name, value in event.metrics.items()},
        "partial": bool(event.partial),
        "event_id": str(event.event_id),
        "occurred_at": event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def canonical_report(report: CompatibilityReport) -> bytes:
    """The bytes a compatibility report's signer signs: every field but the signature, in the
    encoding ``canonical_result`` uses (so what was tested, on which containers and data, the
    outcome, the signer and the time cannot change, and the report cannot move to another request)."""
    fields: dict[str, Any] = {
        "report_id": str(report.report_id) if report.report_id else None,
        "benchmark_id": report.benchmark_id,
        "kind": report.kind,
        "component_id": report.component_id,
        "passed": bool(report.passed),
        "metrics": {name: float(value) for name, value in report.metrics.items()},
        "detail": report.detail,
        "failure": report.failure,
        "container_digests": dict(report.container_digests),
        "data_hash": report.data_hash,
        "site": report.site,
        "key_id": report.key_id,
        "signed_at": report.signed_at.astimezone(UTC).isoformat(timespec="microseconds") if report.signed_at else None,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def verify_report(public_key: VerifyKey, report: CompatibilityReport) -> bool:
    return report.signature is not None and verify(public_key, report.signature, canonical_report(report))


def key_id_of(public_key: str) -> str:
    """A short, stable name for a public key: the first 16 hex digits of the sha256 of its raw bytes."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _raw_public(public_key: str) -> bytes:
    try:
        raw = base64.b64decode(public_key, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKey("the public key is not base64") from exc
    if len(raw) != 32:
        raise BadKey(f"an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return raw


@functools.lru_cache(maxsize=4096)
def load_public_key(public_key: str) -> VerifyKey:
    """Parse a base64 raw public key, once per process: a key signs many results."""
    return VerifyKey(_raw_public(public_key))


def verify(public_key: VerifyKey, signature: str, message: bytes) -> bool:
    """True if ``signature`` (base64) is ``public_key``'s signature of ``message``."""
    try:
        public_key.verify(message, base64.b64decode(signature, validate=True))
    except (BadSignatureError, binascii.Error, ValueError):
        return False
    return True


def verify_published(work: list[tuple[str, bytes]]) -> list[bool]:
    """Each (public key, ResultReported as published) checked: what a worker process is handed.
    It decodes the bytes itself, so the canonical encoding is worked out on its core too."""
    from shared.events import ResultReported  # the events module imports this one

    return [verify_result(load_public_key(key), ResultReported.model_validate_json(payload)) for key, payload in work]


def verify_result(public_key: VerifyKey, event: ResultReported) -> bool:
    return event.signature is not None and verify(public_key, event.signature, canonical_result(event))


class SiteKey:
    """A site's Ed25519 key pair. The private half stays in the site's work directory."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode()
        self.key_id = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> SiteKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> SiteKey:
        """The key at ``path`` (PEM, PKCS#8), created with mode 0600 on first use."""
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        pem = key._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # 0600 from the first byte, and complete before it has its name; exclusive, so of two agents
        # starting at once exactly one key is written, and the other agent uses that one.
        try:
            write_private(path, pem, exclusive=True)
        except FileExistsError:
            return cls.load(path)
        return key

    @classmethod
    def load(cls, path: Path) -> SiteKey:
        if path.stat().st_mode & 0o077:
            raise PermissionError(
                f"{path} is readable by other users; the site's signing key must be private: chmod 600 {path}"
            )
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise BadKey(f"{path} holds a {type(private).__name__}, not an Ed25519 private key")
        return cls(private)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()

    def sign_result(self, event: ResultReported) -> ResultReported:
        """``event`` with this key's id and its signature (the event is frozen: a signed copy)."""
        unsigned = event.model_copy(update={"key_id": self.key_id, "signature": None})
        return unsigned.model_copy(update={"signature": self.sign(canonical_result(unsigned))})

    def sign_report(self, report: CompatibilityReport, site: str) -> CompatibilityReport:
        """``report`` signed by this key of ``site``, with a fresh report id and the signing time
        (unless it has them); it must already say what it tested (benchmark, kind, component)."""
        from shared.events import utcnow  # the events module imports this one

        update: dict[str, Any] = {"site": site, "key_id": self.key_id, "signature": None}
        if report.report_id is None:
            update["report_id"] = uuid.uuid4()
        if report.signed_at is None:
            update["signed_at"] = utcnow()
        unsigned = report.model_copy(update=update)
        return unsigned.model_copy(update={"signature": self.sign(canonical_report(unsigned))})
