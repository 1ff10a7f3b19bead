"""Signed results: the canonical encoding, sign/verify, tampering with each signed field, and the
aggregator's trust rule (``services.aggregator.trust.verdict``), all without I/O."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from services.aggregator.trust import KnownKey, verdict
from shared.events import ResultReported
from shared.messaging import NotYet, PermanentFailure
from shared.signing import SIGNED_FIELDS, BadKey, SiteKey, canonical_result, key_id_of, load_public_key, verify_result

KEY = SiteKey.generate()


def result(**changes: object) -> ResultReported:
    fields: dict = {
        "actor": "alice",
        "site": "hospital-a",
        "benchmark_id": 1,
        "model_id": 2,
        "dataset_id": 3,
        "metrics": {"auc": 0.91, "accuracy": 0.875},
        "container_digests": {"model": "sha256:" + "1" * 64, "metrics": "sha256:" + "2" * 64},
        "dataset_hash": "3" * 64,
    }
    return ResultReported(**(fields | changes))


def known(key: SiteKey = KEY, site: str = "hospital-a", **extra: object) -> KnownKey:
    return KnownKey(key.key_id, site, load_public_key(key.public_key), **extra)  # type: ignore[arg-type]


def test_a_signed_result_verifies_after_a_json_round_trip() -> None:
    signed = KEY.sign_result(result())
    decoded = ResultReported.model_validate_json(signed.model_dump_json())
    assert decoded.key_id == KEY.key_id and decoded.signature
    assert canonical_result(decoded) == canonical_result(signed)
    assert verify_result(load_public_key(KEY.public_key), decoded)


def test_the_encoding_is_sorted_compact_and_independent_of_dict_order() -> None:
    one = result(metrics={"auc": 1, "accuracy": 0.5})
    other = one.model_copy(update={"metrics": {"accuracy": 0.5, "auc": 1.0}})
    assert canonical_result(one) == canonical_result(other)
    text = canonical_result(one).decode()
    assert " " not in text and text.index('"benchmark_id"') < text.index('"site"')
    assert '"auc":1.0' in text  # an integer metric is signed as the float it decodes to


TAMPERED = {
    "benchmark_id": 9,
    "model_id": 9,
    "dataset_id": 9,
    "site": "hospital-b",
    "container_digests": {"model": "sha256:" + "9" * 64, "metrics": "sha256:" + "2" * 64},
    "dataset_hash": "9" * 64,
    "metrics": {"auc": 0.99, "accuracy": 0.875},
    "partial": True,
    "event_id": uuid4(),
    "occurred_at": None,  # filled in below: a second later
}


def test_every_signed_field_is_covered_by_a_tampering_case() -> None:
    assert set(TAMPERED) == set(SIGNED_FIELDS)


@pytest.mark.parametrize("field", SIGNED_FIELDS)
def test_changing_any_signed_field_breaks_the_signature(field: str) -> None:
    signed = KEY.sign_result(result())
    value = TAMPERED[field] if field != "occurred_at" else signed.occurred_at + timedelta(seconds=1)
    tampered = signed.model_copy(update={field: value})
    assert not verify_result(load_public_key(KEY.public_key), tampered)
    assert isinstance(verdict(tampered, known(site=tampered.site)), PermanentFailure)


def test_another_keys_signature_is_refused_as_bad() -> None:
    forged = SiteKey.generate().sign_result(result()).model_copy(update={"key_id": KEY.key_id})
    refusal = verdict(forged, known())
    assert isinstance(refusal, PermanentFailure) and "bad signature" in str(refusal)


def test_the_trust_rule() -> None:
    signed = KEY.sign_result(result())
    assert verdict(signed, known()) is None
    unsigned = verdict(result(), known())
    assert isinstance(unsigned, PermanentFailure) and "unsigned" in str(unsigned)
    assert isinstance(verdict(signed, None), NotYet)  # its registration may still be on its way
    other_site = verdict(signed, known(site="hospital-b"))
    assert isinstance(other_site, PermanentFailure) and "belongs to site 'hospital-b'" in str(other_site)
    # Revoked: what it signed before the cut-off stays trusted, what it signed from then on does not.
    later = signed.occurred_at + timedelta(seconds=1)
    assert verdict(signed, known(effective_from=later, reason="disk replaced")) is None
    refused = verdict(signed, known(effective_from=signed.occurred_at, reason="disk replaced"))
    assert isinstance(refused, PermanentFailure) and "revoked" in str(refused) and "disk replaced" in str(refused)


def test_the_private_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "site" / "signing.key"
    key = SiteKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = SiteKey.load_or_create(path)
    assert again.key_id == key.key_id == key_id_of(key.public_key)
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        SiteKey.load_or_create(path)


@pytest.mark.parametrize("public_key", ["not base64!", "AAAA", "A" * 100])
def test_malformed_public_keys_are_refused(public_key: str) -> None:
    with pytest.raises(BadKey):
        key_id_of(public_key)
