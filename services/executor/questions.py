"""What a site agent asks the other services (by request/reply): the benchmark's parts, a model's
container, the approved models; and the commands it sends, refused or not."""

from __future__ import annotations

from dataclasses import dataclass

from faststream.nats import NatsBroker

from services.executor.settings import SiteSettings
from shared.commands import Command, GetEntity, ListAssociations, Outcome
from shared.containers import ContainerSpec, HostedFile
from shared.messaging import NotYet
from shared.service import ask


class ServiceRefused(Exception):
    """Another service refused what the agent asked; retried by redelivery if transient."""


@dataclass(frozen=True)
class BenchmarkParts:
    benchmark_id: int
    name: str
    preparator_id: int
    preparator: ContainerSpec
    reference_model_id: int
    metrics: ContainerSpec
    metric_names: tuple[str, ...]
    demo_dataset: HostedFile


class FederationQuestions:
    site: SiteSettings
    broker: NatsBroker
    request_timeout: float

    async def command(self, command: Command) -> Outcome:
        outcome = await ask(self.broker, command, self.request_timeout)
        if not outcome.ok:
            raise ServiceRefused(f"{type(command).__name__} refused ({outcome.code}): {outcome.reason}")
        return outcome

    async def get(self, entity: str, entity_id: int) -> dict:
        outcome = await ask(
            self.broker,
            GetEntity(actor=self.site.owner, entity=entity, id=entity_id),  # type: ignore[arg-type]
            self.request_timeout,
        )
        if outcome.code == "not_found":
            # We heard of it from an event, so the registry will know it soon (its own event
            # consumer may be a moment behind ours).
            raise NotYet(f"{entity} {entity_id}: {outcome.reason}")
        if not outcome.ok:
            raise ServiceRefused(f"reading {entity} {entity_id} refused ({outcome.code}): {outcome.reason}")
        return outcome.data

    async def model_spec(self, model_id: int) -> ContainerSpec:
        model = await self.get("model", model_id)
        return ContainerSpec.model_validate((await self.get("container", model["container_id"]))["spec"])

    async def benchmark(self, benchmark_id: int) -> BenchmarkParts:
        b = await self.get("benchmark", benchmark_id)
        preparator = ContainerSpec.model_validate((await self.get("container", b["data_preparator_id"]))["spec"])
        metrics = ContainerSpec.model_validate((await self.get("container", b["metrics_container_id"]))["spec"])
        parts = BenchmarkParts(
            benchmark_id=benchmark_id,
            name=b["name"],
            preparator_id=b["data_preparator_id"],
            preparator=preparator,
            reference_model_id=b["reference_model_id"],
            metrics=metrics,
            metric_names=tuple(m["name"] for m in b["metrics"]),
            demo_dataset=HostedFile.model_validate(b["demo_dataset"]),
        )
        return parts

    async def approved_models(self, benchmark_id: int) -> list[int]:
        rows = (
            await self.command(
                ListAssociations(actor=self.site.owner, benchmark_id=benchmark_id, kind="model", status="APPROVED")
            )
        ).data
        return [row["component_id"] for row in rows]  # already in priority order
