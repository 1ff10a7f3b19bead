"""The real approvals service, fed real registry and site events over a real nats-server with
JetStream, asked real commands, and read back through the events it publishes on APPROVALS.

Registry facts are published the way the registry's outbox relay publishes them (to their subject
on the REGISTRY stream, ``Nats-Msg-Id`` = event id); a test then waits until the service's
durable consumer of that event type has acknowledged it, so every wait is on a fact, and bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from approvals_world import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    COMMITTEE,
    FAILED,
    PASSED,
    PREPARATOR,
    TRUSTED,
    Federation,
    federation,
)

from shared.commands import DecideBenchmark, ListAssociations, Outcome, SetAutoApproval, SetPriority
from shared.events import (
    AssociationApproved,
    AssociationPriorityChanged,
    AssociationRejected,
    AutoApprovalChanged,
    BenchmarkApproved,
    BenchmarkRejected,
    EntityDeleted,
)


@pytest.fixture
async def fed(tmp_path: Path, nats_url: str, database_url: str | None) -> AsyncIterator[Federation]:
    async with federation(tmp_path, nats_url, database_url) as world:
        yield world


def refused(outcome: Outcome, code: str, *words: str) -> None:
    assert not outcome.ok and outcome.code == code, outcome
    for word in words:
        assert word in (outcome.reason or ""), outcome.reason


# --- benchmarks -------------------------------------------------------------------------------


async def test_benchmark_from_the_auto_approve_list_is_approved_on_submission(fed: Federation) -> None:
    await fed.benchmark(1, owner=TRUSTED, approve=False)
    approved = await fed.event(BenchmarkApproved, benchmark_id=1)
    assert approved.actor == "auto-approve list" and "trusted is on the list" in approved.reason
    trail = (await fed.trail(TRUSTED, "benchmark", 1)).data
    assert [(t["action"], t["status"], t["actor"]) for t in trail] == [
        ("submitted", "PENDING", TRUSTED),
        ("approved", "APPROVED", "auto-approve list"),
    ]
    assert trail[1]["decided_by"] == "auto-approve list"
    # An admin may still withdraw it; then it is final.
    assert (await fed.ask(DecideBenchmark(actor=ADMIN, is_admin=True, benchmark_id=1, approve=False))).data == {
        "status": "REJECTED"
    }
    await fed.event(BenchmarkRejected, benchmark_id=1)
    again = await fed.ask(DecideBenchmark(actor=ADMIN, is_admin=True, benchmark_id=1, approve=True))
    refused(again, "conflict", "rejected")


async def test_other_benchmarks_wait_for_an_admin(fed: Federation) -> None:
    await fed.benchmark(2, owner=ALICE, approve=False)
    refused(await fed.ask(DecideBenchmark(actor=ALICE, benchmark_id=2, approve=True)), "forbidden", "admin")
    refused(await fed.request(ALICE, 2, "model", 1), "unavailable")  # the model is not registered
    await fed.model(5, ALICE)
    refused(await fed.request(ALICE, 2, "model", 5), "conflict", "PENDING", "admin approves")
    assert not await fed.events(BenchmarkApproved)
    decided = await fed.ask(DecideBenchmark(actor=ADMIN, is_admin=True, benchmark_id=2, approve=True, reason="ok"))
    assert decided.ok and decided.data == {"status": "APPROVED"}
    assert (await fed.event(BenchmarkApproved, benchmark_id=2)).actor == ADMIN
    twice = await fed.ask(DecideBenchmark(actor=ADMIN, is_admin=True, benchmark_id=2, approve=True))
    refused(twice, "conflict", "already approved")
    refused(await fed.trail(BOB, "benchmark", 2), "forbidden")


# --- the component projection -----------------------------------------------------------------


async def test_components_join_only_in_operation_valid_and_present(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(10, BOB, state="DEVELOPMENT")
    refused(await fed.request(BOB, 1, "model", 10), "conflict", "model 10 is in DEVELOPMENT", "OPERATION")
    await fed.edit("model", 10, state=("DEVELOPMENT", "OPERATION"), user_metadata=({}, {"x": 1}))
    assert (await fed.request(BOB, 1, "model", 10)).data["status"] == "PENDING"
    await fed.tested(1, 10, PASSED)
    await fed.edit("model", 10, is_valid=(True, False))
    refused(await fed.decide(COMMITTEE, 1, "model", 10, approve=True), "conflict", "marked invalid")
    await fed.edit("model", 10, is_valid=(False, True))
    assert (await fed.decide(COMMITTEE, 1, "model", 10, approve=True)).data == {"status": "APPROVED"}

    await fed.dataset(20, BOB, preparator=PREPARATOR + 1)
    refused(await fed.request(BOB, 1, "dataset", 20, PASSED), "invalid", "data preparator 1")
    await fed.dataset(21, BOB)
    await fed.publish(EntityDeleted(actor=ADMIN, entity="dataset", entity_id=21, reason="duplicate"))
    refused(await fed.request(BOB, 1, "dataset", 21, PASSED), "not_found", "dataset 21 was deleted")


async def test_an_edit_that_arrives_before_the_registration_is_kept_for_it(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.edit("model", 11, state=("DEVELOPMENT", "OPERATION"))  # the registry's edit overtook it
    await fed.model(11, BOB, state="DEVELOPMENT")
    assert (await fed.request(BOB, 1, "model", 11)).ok


async def test_a_reused_id_does_not_inherit_anything(fed: Federation, caplog: pytest.LogCaptureFixture) -> None:
    """The registry must never reuse an id; if it does, the first entity keeps it, loudly."""
    await fed.benchmark(1)
    await fed.model(12, BOB)
    await fed.publish(EntityDeleted(actor=ADMIN, entity="model", entity_id=12))
    await fed.model(12, CAROL)
    refused(await fed.request(CAROL, 1, "model", 12), "not_found")  # still bob's, deleted: none for carol
    assert "model 12 registered again (owner carol) after its deletion" in caplog.text


# --- auto-approval ----------------------------------------------------------------------------


async def test_auto_approval_policy_and_a_passing_test_that_arrives_later(fed: Federation) -> None:
    await fed.benchmark(1)
    policy = SetAutoApproval(actor=CAROL, benchmark_id=1, kind="model", mode="ALLOWLIST", allowlist=[BOB, " bob"])
    refused(await fed.ask(policy), "forbidden", "owner of benchmark 1")
    set_ = await fed.ask(policy.model_copy(update={"actor": COMMITTEE}))
    assert set_.ok and set_.data["allowlist"] == [BOB] and set_.data["changed"]
    changed = await fed.event(AutoApprovalChanged, benchmark_id=1)
    assert (changed.kind, changed.mode, changed.allowlist, changed.actor) == ("model", "ALLOWLIST", [BOB], COMMITTEE)

    for model_id, owner in ((30, BOB), (31, BOB), (32, CAROL), (33, COMMITTEE)):
        await fed.model(model_id, owner)
    # bob is on the list: pending until a test passes, then approved by the policy.
    asked = await fed.request(BOB, 1, "model", 30)
    assert asked.data["status"] == "PENDING" and "once a compatibility test passes" in asked.data["auto_approval"]
    await fed.tested(1, 30, PASSED)
    approved = await fed.event(AssociationApproved, component_id=30)
    assert approved.actor == "auto-approval (ALLOWLIST)" and "allowlist" in approved.reason
    (row,) = await fed.associations(benchmark_id=1, component_id=30)
    assert (row["status"], row["decided_by"], row["compatibility"]["passed"]) == (
        "APPROVED",
        "auto-approval (ALLOWLIST)",
        True,
    )
    # A failed test never auto-approves.
    await fed.request(BOB, 1, "model", 31)
    await fed.tested(1, 31, FAILED)
    # carol is not on the list: a person decides even after a passing test.
    await fed.request(CAROL, 1, "model", 32)
    await fed.tested(1, 32, PASSED)
    # the benchmark owner's own model with a passing test attached: approved on request.
    own = await fed.request(COMMITTEE, 1, "model", 33, PASSED)
    assert own.data["status"] == "APPROVED" and "also owns" in own.data["auto_approval"]
    statuses = {a["component_id"]: (a["status"], a["decided_by"]) for a in await fed.associations(benchmark_id=1)}
    assert statuses == {
        30: ("APPROVED", "auto-approval (ALLOWLIST)"),
        31: ("PENDING", None),
        32: ("PENDING", None),
        33: ("APPROVED", "auto-approval (same owner)"),
    }
    # Benchmark-owner-initiated requests wait for the other side, even under ALWAYS.
    await fed.ask(SetAutoApproval(actor=COMMITTEE, benchmark_id=1, kind="model", mode="ALWAYS"))
    await fed.model(34, CAROL)
    invited = await fed.request(COMMITTEE, 1, "model", 34, PASSED)
    assert invited.data["status"] == "PENDING" and "model's owner must approve" in invited.data["auto_approval"]
    assert (await fed.request(CAROL, 1, "model", 34)).code == "conflict"  # already pending
    assert (await fed.decide(CAROL, 1, "model", 34, approve=True)).data == {"status": "APPROVED"}


# --- decisions, revocation, history -----------------------------------------------------------


async def test_two_party_consent_revocation_and_a_new_request(fed: Federation) -> None:
    await fed.benchmark(1)
    await fed.model(40, BOB)
    assert (await fed.request(BOB, 1, "model", 40)).data["status"] == "PENDING"
    refused(await fed.decide(BOB, 1, "model", 40, approve=True), "forbidden", "other party")
    refused(await fed.decide(COMMITTEE, 1, "model", 40, approve=True), "conflict", "has not reported yet")
    refused(await fed.decide(CAROL, 1, "model", 40, approve=False), "forbidden")
    await fed.tested(1, 40, PASSED)
    assert (await fed.decide(COMMITTEE, 1, "model", 40, approve=True, reason="good")).data == {"status": "APPROVED"}
    refused(await fed.decide(COMMITTEE, 1, "model", 40, approve=True), "conflict", "already approved")
    refused(await fed.request(BOB, 1, "model", 40), "conflict", "already approved")
    revoked = await fed.decide(BOB, 1, "model", 40, approve=False)
    assert revoked.data == {"status": "REJECTED"}
    rejected = await fed.event(AssociationRejected, component_id=40)
    assert rejected.actor == BOB and rejected.reason == "approval revoked by bob"
    refused(await fed.decide(BOB, 1, "model", 40, approve=False), "conflict", "REJECTED")
    assert (await fed.request(BOB, 1, "model", 40, PASSED)).data["status"] == "PENDING"

    trail = (await fed.trail(BOB, "model", 40)).data
    assert [(t["action"], t["status"], t["actor"]) for t in trail] == [
        ("requested", "PENDING", BOB),
        ("compatibility_tested", "PASSED", COMMITTEE),
        ("approved", "APPROVED", COMMITTEE),
        ("revoked", "REJECTED", BOB),
        ("re-requested", "PENDING", BOB),
    ]
    assert trail[2]["reason"] == "good" and trail[2]["decided_by"] == COMMITTEE
    assert [t["at"] for t in trail] == sorted(t["at"] for t in trail)


async def test_dataset_request_with_its_test_attached_then_the_committee_approves(fed: Federation) -> None:
    """The demo's path: a site asks with the reference model's test attached."""
    await fed.benchmark(1)
    await fed.dataset(50, "hospital-a")
    assert (await fed.request("hospital-a", 1, "dataset", 50, PASSED)).data["status"] == "PENDING"
    (pending,) = await fed.associations(COMMITTEE, benchmark_id=1, kind="dataset", status="PENDING")
    assert pending["compatibility"]["metrics"] == {"auc": 0.9}
    assert (await fed.decide(COMMITTEE, 1, "dataset", 50, approve=True)).data == {"status": "APPROVED"}
    approved = await fed.event(AssociationApproved, kind="dataset", component_id=50)
    assert (approved.priority, approved.actor) == (0, COMMITTEE)


# --- priorities, listing, audit ---------------------------------------------------------------


async def test_priorities_order_the_approved_models(fed: Federation) -> None:
    await fed.benchmark(1)
    for model_id in (60, 61, 62):
        await fed.model(model_id, BOB)
        await fed.request(BOB, 1, "model", model_id, PASSED)
    refused(await fed.ask(SetPriority(actor=COMMITTEE, benchmark_id=1, model_id=99, priority=5)), "not_found")
    refused(await fed.ask(SetPriority(actor=BOB, benchmark_id=1, model_id=61, priority=5)), "forbidden")
    raised = await fed.ask(SetPriority(actor=COMMITTEE, benchmark_id=1, model_id=62, priority=5))
    assert raised.ok and (raised.data["old"], raised.data["priority"]) == (0, 5)
    changed = await fed.event(AssociationPriorityChanged, model_id=62)
    assert (changed.old, changed.new) == (0, 5)
    assert (await fed.ask(SetPriority(actor=ADMIN, is_admin=True, benchmark_id=1, model_id=60, priority=-1))).ok
    for model_id in (60, 61, 62):
        await fed.decide(COMMITTEE, 1, "model", model_id, approve=True)
    assert (await fed.event(AssociationApproved, component_id=62)).priority == 5  # the current priority
    # What a site agent asks once its dataset has joined: the approved models, in running order.
    await fed.dataset(63, "hospital-a")
    await fed.request("hospital-a", 1, "dataset", 63, PASSED)
    await fed.decide(COMMITTEE, 1, "dataset", 63, approve=True)
    rows = await fed.associations("hospital-a", benchmark_id=1, kind="model", status="APPROVED")
    assert [(r["component_id"], r["priority"]) for r in rows] == [(62, 5), (61, 0), (60, -1)]
    trail = (await fed.trail(COMMITTEE, "benchmark", 1)).data
    changes = [(t["component_id"], t["old"], t["new"]) for t in trail if t["action"] == "priority_changed"]
    assert changes == [(62, 0, 5), (60, 0, -1)]


async def test_listing_filters_and_pages(fed: Federation) -> None:
    await fed.benchmark(1, owner=COMMITTEE)
    await fed.benchmark(2, owner=ALICE)
    await fed.model(70, BOB)
    await fed.model(71, CAROL)
    await fed.dataset(72, BOB)
    for benchmark_id in (1, 2):
        await fed.request(BOB, benchmark_id, "model", 70)
        await fed.request(CAROL, benchmark_id, "model", 71)
    await fed.request(BOB, 1, "dataset", 72, PASSED)
    everything = await fed.associations()
    assert len(everything) == 5
    assert {(a["benchmark_id"], a["component_id"]) for a in await fed.associations(CAROL, involving_me=True)} == {
        (1, 71),
        (2, 71),
    }
    assert {a["benchmark_id"] for a in await fed.associations(ALICE, involving_me=True)} == {2}
    assert [a["benchmark_id"] for a in await fed.associations(component_id=70, kind="model")] == [1, 2]
    assert [a["kind"] for a in await fed.associations(kind="dataset")] == ["dataset"]
    pages = [await fed.associations(limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [a["id"] for page in pages for a in page] == [a["id"] for a in everything]


async def test_who_may_list_a_benchmarks_associations(fed: Federation) -> None:
    """MedPerf: a benchmark's models are listed to admins, its owner and its approved data owners;
    its datasets to admins, its owner and its approved model owners; everyone sees their own."""
    await fed.benchmark(1)
    await fed.model(90, BOB)
    await fed.model(91, CAROL)
    await fed.dataset(92, ALICE)
    await fed.request(BOB, 1, "model", 90)
    await fed.tested(1, 90, PASSED)
    await fed.decide(COMMITTEE, 1, "model", 90, approve=True)
    await fed.request(CAROL, 1, "model", 91)
    await fed.request(ALICE, 1, "dataset", 92, PASSED)

    def pairs(rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
        return {(a["kind"], a["component_id"]) for a in rows}

    everything = {("model", 90), ("model", 91), ("dataset", 92)}
    assert pairs(await fed.associations(COMMITTEE, benchmark_id=1)) == everything
    assert pairs(await fed.associations(ADMIN, benchmark_id=1)) == everything
    assert pairs(await fed.associations(BOB, benchmark_id=1)) == {("model", 90), ("dataset", 92)}  # approved model
    assert pairs(await fed.associations(CAROL, benchmark_id=1)) == {("model", 91)}  # pending: only her own
    assert pairs(await fed.associations(ALICE, benchmark_id=1)) == {("dataset", 92)}
    await fed.decide(COMMITTEE, 1, "dataset", 92, approve=True)
    assert pairs(await fed.associations(ALICE, benchmark_id=1)) == everything  # now an approved data owner
    refused(await fed.ask(ListAssociations(actor="stranger", benchmark_id=1)), "forbidden", "owner of benchmark 1")
    assert await fed.associations("stranger") == []  # across benchmarks: only what one may see
    assert await fed.associations("stranger", benchmark_id=1, involving_me=True) == []


async def test_who_may_read_an_audit_trail(fed: Federation) -> None:
    await fed.benchmark(1, owner=COMMITTEE)
    await fed.benchmark(2, owner=ALICE)
    await fed.model(80, BOB)
    await fed.request(BOB, 1, "model", 80)
    await fed.request(BOB, 2, "model", 80)
    await fed.ask(SetAutoApproval(actor=ALICE, benchmark_id=2, kind="dataset", mode="ALWAYS"))
    everything = (await fed.trail(BOB, "model", 80)).data
    assert {t["benchmark_id"] for t in everything} == {1, 2}
    assert (await fed.trail(ADMIN, "model", 80)).data == everything
    alices = (await fed.trail(ALICE, "model", 80)).data  # her benchmark's side of the model's story
    assert [(t["benchmark_id"], t["action"]) for t in alices] == [(2, "requested")]
    refused(await fed.trail(CAROL, "model", 80), "forbidden")
    refused(await fed.trail(BOB, "benchmark", 2), "forbidden")
    refused(await fed.trail(ADMIN, "dataset", 404), "not_found")
    benchmark = (await fed.trail(ALICE, "benchmark", 2)).data
    assert [t["action"] for t in benchmark] == ["submitted", "approved", "requested", "auto_approval_changed"]
    assert benchmark[-1]["new"] == {"mode": "ALWAYS", "allowlist": []}
