"""The approvals service's test world: a plain NATS client playing the registry, the sites and
users around the real approvals service (tests/integration/test_approvals_lifecycle.py and
test_signed_reports.py share it).

Registry facts are published the way the registry's outbox relay publishes them (to their subject
on the REGISTRY stream, ``Nats-Msg-Id`` = event id); a helper then waits until the service's
durable consumer of that event type has acknowledged it, so every wait is on a fact, and bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
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
)
from shared.containers import HostedFile
from shared.events import (
    BenchmarkSubmitted,
    CompatibilityReport,
    CompatibilityTested,
    DatasetRegistered,
    EntityEdited,
    Event,
    FieldChange,
    MetricSpec,
    ModelRegistered,
    SiteEvent,
    SiteKeyRegistered,
    parse_event,
)
from shared.service import ServiceHost, ask
from shared.settings import Settings
from shared.signing import SiteKey

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
    keys: dict[str, SiteKey] = field(default_factory=dict)

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

    async def tested(
        self, benchmark_id: int, model_id: int, report: CompatibilityReport, signer: str = COMMITTEE
    ) -> None:
        """The committee's agent (``signer``'s site) reports its signed test of a model."""
        signed = await self.signed(signer, benchmark_id, "model", model_id, report)
        await self.publish(
            CompatibilityTested(
                actor=signer,
                site=signed.site,
                benchmark_id=benchmark_id,
                kind="model",
                component_id=model_id,
                report=signed,
            )
        )

    # --- signing keys -----------------------------------------------------------------------

    def site_of(self, user: str) -> str:
        return f"ws-{user}"

    async def key(self, user: str) -> SiteKey:
        """``user``'s key, registered (as the registry announces it) at their own site on first use."""
        if user not in self.keys:
            key = self.keys[user] = SiteKey.generate()
            await self.publish(
                SiteKeyRegistered(
                    actor=user, site=self.site_of(user), key_id=key.key_id, public_key=key.public_key, owner=user
                )
            )
        return self.keys[user]

    async def signed(
        self, signer: str, benchmark_id: int, kind: str, component_id: int, outcome: CompatibilityReport
    ) -> CompatibilityReport:
        """``outcome`` as a report of this association, signed by ``signer``'s key."""
        report = outcome.model_copy(update={"benchmark_id": benchmark_id, "kind": kind, "component_id": component_id})
        return (await self.key(signer)).sign_report(report, self.site_of(signer))

    # --- commands -------------------------------------------------------------------------

    async def request(
        self,
        actor: str,
        benchmark_id: int,
        kind: str,
        component_id: int,
        report: CompatibilityReport | None = None,
        signer: str | None = None,
    ) -> Outcome:
        """Ask as ``actor``; an unsigned ``report`` is signed by ``signer`` (default: the actor)
        first, unless ``signer`` is ``""`` (sent as the caller wrote it)."""
        if report is not None and not report.signed and signer != "":
            report = await self.signed(signer or actor, benchmark_id, kind, component_id, report)
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


@asynccontextmanager
async def federation(tmp_path: Path, nats_url: str, database_url: str | None) -> AsyncIterator[Federation]:
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
