"""Only signed compatibility tests count: the real approvals service refuses a report in a request
that nobody signed, that a key without standing signed, or that a revoked key signed; a report the
model owner signed counts, and the committee decides on it without an agent of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from approvals_world import BOB, CAROL, COMMITTEE, FAILED, PASSED, Federation, federation

from shared.commands import SetAutoApproval
from shared.events import AssociationApproved, SiteKeyRevoked, utcnow


@pytest.fixture
async def fed(tmp_path: Path, nats_url: str, database_url: str | None) -> AsyncIterator[Federation]:
    async with federation(tmp_path, nats_url, database_url) as world:
        yield world


async def test_a_forged_unsigned_report_does_not_count(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.ask(SetAutoApproval(actor=COMMITTEE, benchmark_id=1, kind="model", mode="ALWAYS"))
    await fed.model(10, BOB)
    asked = await fed.request(BOB, 1, "model", 10, PASSED, signer="")  # written by the caller, signed by nobody
    assert not asked.ok and asked.code == "invalid", asked
    assert "signed" in (asked.reason or "")
    assert await fed.associations(benchmark_id=1) == []


async def test_a_report_signed_by_someone_without_standing_is_refused(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(11, BOB)
    asked = await fed.request(BOB, 1, "model", 11, PASSED, signer=CAROL)  # carol has a key, but no say here
    assert (asked.code, asked.ok) == ("forbidden", False), asked
    assert "belongs to carol, who is neither the benchmark's committee (committee) nor the owner" in asked.reason
    assert await fed.associations(benchmark_id=1) == []


async def test_a_revoked_keys_report_is_refused(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(12, BOB)
    report = await fed.signed(BOB, 1, "model", 12, PASSED)  # signed while the key was trusted
    key = fed.keys[BOB]
    revoked = SiteKeyRevoked(
        actor=BOB, site=fed.site_of(BOB), key_id=key.key_id, effective_from=utcnow(), reason="laptop stolen"
    )
    await fed.publish(revoked)
    asked = await fed.request(BOB, 1, "model", 12, report)
    assert (asked.code, asked.ok) == ("forbidden", False), asked
    assert "was revoked" in asked.reason and "laptop stolen" in asked.reason


async def test_a_changed_or_misplaced_report_is_refused(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(13, BOB)
    await fed.model(14, BOB)
    failed = await fed.signed(BOB, 1, "model", 13, FAILED)
    forged = failed.model_copy(update={"passed": True})
    asked = await fed.request(BOB, 1, "model", 13, forged)
    assert (asked.code, asked.ok) == ("invalid", False) and "bad signature" in asked.reason, asked
    elsewhere = await fed.request(BOB, 1, "model", 14, await fed.signed(BOB, 1, "model", 13, PASSED))
    assert elsewhere.code == "invalid" and "tested model 13" in elsewhere.reason, elsewhere


async def test_without_a_committee_agent_the_committee_decides_on_the_owners_signed_test(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(20, BOB)
    report = await fed.signed(BOB, 1, "model", 20, PASSED)
    assert (await fed.request(BOB, 1, "model", 20, report)).data["status"] == "PENDING"
    (row,) = await fed.associations(COMMITTEE, benchmark_id=1)
    shown = row["compatibility"]
    assert (shown["passed"], shown["key_id"], shown["site"]) == (True, report.key_id, fed.site_of(BOB))
    assert shown["report_id"] == str(report.report_id) and shown["metrics"] == {"auc": 0.9}
    assert (await fed.decide(COMMITTEE, 1, "model", 20, approve=True)).data == {"status": "APPROVED"}
    await fed.event(AssociationApproved, component_id=20)
    trail = (await fed.trail(COMMITTEE, "model", 20)).data
    seen = {"report_id": str(report.report_id), "key_id": report.key_id, "passed": True}
    assert [(t["action"], t["report"]) for t in trail] == [("requested", seen), ("approved", seen)]


async def test_the_committees_own_test_supersedes_the_owners(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.ask(SetAutoApproval(actor=COMMITTEE, benchmark_id=1, kind="model", mode="ALLOWLIST", allowlist=["x"]))
    await fed.model(21, BOB)
    await fed.request(BOB, 1, "model", 21, PASSED)
    await fed.tested(1, 21, FAILED)  # the committee's agent ran it too, and it failed there
    (row,) = await fed.associations(COMMITTEE, benchmark_id=1)
    assert row["compatibility"]["passed"] is False and row["compatibility"]["key_id"] == fed.keys[COMMITTEE].key_id
    refused = await fed.decide(COMMITTEE, 1, "model", 21, approve=True)
    assert refused.code == "conflict" and "failed" in refused.reason


async def test_a_site_report_signed_by_a_key_without_standing_is_not_attached(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(22, BOB)
    await fed.request(BOB, 1, "model", 22)
    await fed.tested(1, 22, PASSED, signer=CAROL)  # parked as a dead letter, never attached
    (row,) = await fed.associations(COMMITTEE, benchmark_id=1)
    assert row["compatibility"] is None
    refused = await fed.decide(COMMITTEE, 1, "model", 22, approve=True)
    assert refused.code == "conflict" and "has not reported yet" in refused.reason
