"""The real approvals service, fed real registry and site events over a real nats-server with
JetStream, asked real commands, and read back through the events it publishes on APPROVALS.

Registry facts are published the way the registry's outbox relay publishes them (to their subject
on the REGISTRY stream, ``Nats-Msg-Id`` = event id); a test then waits until the service's
durable consumer of that event type has acknowledged it, so every wait is on a fact, and bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from waiting import eventually

from services.approvals.app import create_service
from shared.commands import (
    AuditTrail,
    Command,
    DecideAssociation,
    DecideBenchmark,
    ListAssociations,
    Outcome,
    RequestAssociation,
    SetAutoApproval,
    SetPriority,
)
from shared.containers import HostedFile
from shared.events import (
    AssociationApproved,
    AssociationPriorityChanged,
    AssociationRejected,
    AutoApprovalChanged,
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    CompatibilityReport,
    CompatibilityTested,
    DatasetRegistered,
    EntityDeleted,
    EntityEdited,
    Event,
    FieldChange,
    MetricSpec,
    ModelRegistered,
    SiteEvent,
    parse_event,
)
from shared.service import ServiceHost, ask
from shared.settings import Settings

PREPARATOR = 1
TRUSTED, COMMITTEE, ALICE, BOB, CAROL, ADMIN = "trusted", "committee", "alice", "bob", "carol", "admin"
PASSED = CompatibilityReport(passed=True, metrics={"auc": 0.9}, detail="ran on the demo data")
FAILED = CompatibilityReport(passed=False, detail="the model crashed")


@dataclass
class Federation:
    """The approvals service plus a plain NATS client playing the registry, the sites and users."""

    host: ServiceHost
    nc: NatsClient
    js: JetStreamContext

    async def publish(self, event: Event) -> None:
        """Publish ``event`` as its owner's relay would, and wait until approvals has handled it."""
        stream = "SITES" if isinstance(event, SiteEvent) else "REGISTRY"
        ack = await self.js.publish(
            event.subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": str(event.event_id)}, stream=stream
        )
        durable = f"approvals-{event.type.replace('.', '-')}"
        await eventually(
            lambda: self._acked(stream, durable, ack.seq), f"approvals to acknowledge {event.type} #{ack.seq}"
        )

    async def _acked(self, stream: str, durable: str, seq: int) -> bool:
        info = await self.js.consumer_info(stream, durable)
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq

    async def ask(self, command: Command) -> Outcome:
        return await ask(self.host.broker, command, 5.0)

    async def events(self, kind: type[Event] | None = None) -> list[Any]:
        """Everything approvals has published so far, in order (optionally of one type)."""
        last = (await self.js.stream_info("APPROVALS")).state.last_seq
        found = [parse_event((await self.js.get_msg("APPROVALS", seq)).data or b"") for seq in range(1, last + 1)]
        return [e for e in found if kind is None or isinstance(e, kind)]

    async def event(self, event_type: type[Event], /, **fields: Any) -> Any:
        """Wait for the one event of ``event_type`` with these fields."""

        async def match() -> list[Any]:
            return [e for e in await self.events(event_type) if all(getattr(e, k) == v for k, v in fields.items())]

        await eventually(match, f"a {event_type.__name__} with {fields}")
        (found,) = await match()
        return found

    # --- registry facts -------------------------------------------------------------------

    async def benchmark(self, benchmark_id: int, owner: str = COMMITTEE, approve: bool = True) -> int:
        await self.publish(
            BenchmarkSubmitted(
                actor=owner,
                benchmark_id=benchmark_id,
                name=f"bench-{benchmark_id}",
                description="",
                owner=owner,
                data_preparator_id=PREPARATOR,
                reference_model_id=1,
                metrics_container_id=2,
                demo_dataset=HostedFile(source="https://example.org/demo.tgz", sha256="b" * 64),
                metrics=[MetricSpec(name="auc")],
                primary_metric="auc",
            )
        )
        if approve:
            assert (
                await self.ask(DecideBenchmark(actor=ADMIN, is_admin=True, benchmark_id=benchmark_id, approve=True))
            ).ok
        return benchmark_id

    async def model(self, model_id: int, owner: str, state: str = "OPERATION") -> int:
        await self.publish(
            ModelRegistered(
                actor=owner, model_id=model_id, name=f"m{model_id}", owner=owner, container_id=9, state=state
            )
        )
        return model_id

    async def dataset(self, dataset_id: int, owner: str, preparator: int = PREPARATOR) -> int:
        await self.publish(
            DatasetRegistered(
                actor=owner,
                dataset_id=dataset_id,
                name=f"d{dataset_id}",
                owner=owner,
                site="hospital-a",
                data_preparator_id=preparator,
                input_hash="i",
                prepared_hash=f"p{dataset_id}",
                statistics={"cases": 10},
                state="OPERATION",
            )
        )
        return dataset_id

    async def edit(self, entity: str, entity_id: int, **changes: tuple[Any, Any]) -> None:
        await self.publish(
            EntityEdited(
                actor=ADMIN,
                entity=entity,  # type: ignore[arg-type]
                entity_id=entity_id,
                changes={k: FieldChange(old=old, new=new) for k, (old, new) in changes.items()},
            )
        )

    async def tested(self, benchmark_id: int, model_id: int, report: CompatibilityReport) -> None:
        await self.publish(
            CompatibilityTested(
                actor=COMMITTEE,
                site="committee",
                benchmark_id=benchmark_id,
                kind="model",
                component_id=model_id,
                report=report,
            )
        )

    # --- commands -------------------------------------------------------------------------

    async def request(
        self, actor: str, benchmark_id: int, kind: str, component_id: int, report: CompatibilityReport | None = None
    ) -> Outcome:
        return await self.ask(
            RequestAssociation(
                actor=actor,
                is_admin=actor == ADMIN,
                benchmark_id=benchmark_id,
                kind=kind,  # type: ignore[arg-type]
                component_id=component_id,
                compatibility=report,
            )
        )

    async def decide(
        self, actor: str, benchmark_id: int, kind: str, component_id: int, approve: bool, reason: str = ""
    ) -> Outcome:
        return await self.ask(
            DecideAssociation(
                actor=actor,
                is_admin=actor == ADMIN,
                benchmark_id=benchmark_id,
                kind=kind,  # type: ignore[arg-type]
                component_id=component_id,
                approve=approve,
                reason=reason,
            )
        )

    async def associations(self, actor: str = ADMIN, **filters: Any) -> list[dict[str, Any]]:
        outcome = await self.ask(ListAssociations(actor=actor, is_admin=actor == ADMIN, **filters))
        assert outcome.ok and isinstance(outcome.data, list), outcome
        return outcome.data

    async def trail(self, actor: str, entity: str, entity_id: int) -> Outcome:
        return await self.ask(AuditTrail(actor=actor, is_admin=actor == ADMIN, entity=entity, id=entity_id))  # type: ignore[arg-type]


@pytest.fixture
async def fed(tmp_path: Path, nats_url: str, database_url: str | None) -> AsyncIterator[Federation]:
    settings = Settings(
        nats_url=nats_url, state_dir=tmp_path, database_url=database_url, auto_approve_benchmarks_from=[TRUSTED]
    )
    host = create_service(settings)
    await host.start()
    nc = await nats.connect(nats_url)
    try:
        yield Federation(host, nc, nc.jetstream())
    finally:
        await nc.close()
        await host.stop()


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
