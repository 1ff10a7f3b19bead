"""The leaderboards in memory: each benchmark's standings, kept current from the database.

A query compares the database's clock (``store.Clock``) with the tick its copy was loaded at:
unchanged, nothing more is read; only new results (or failed runs) since then, just those rows are read and put
into the standings (whose summaries are recomputed for the models they touch); anything else
changed (names, participants, the policy, the metrics container), the benchmark loads afresh.
Several replicas sharing one database each keep their own copy this way, and a process that
restarts loads what it needs at its first query.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator import domain, failures, listings, policy
from services.aggregator.store import (
    BenchmarkInfo,
    Clock,
    ContainerInfo,
    DatasetInfo,
    FailedRun,
    ModelInfo,
    Participant,
    Result,
)
from shared.events import SharingPolicy

_CELL_COLUMNS = (
    Result.model_id,
    Result.dataset_id,
    Result.metrics,
    Result.partial,
    Result.container_digests,
)
_FAILURE_COLUMNS = (FailedRun.model_id, FailedRun.dataset_id, FailedRun.fault, FailedRun.reason)


@dataclass
class Loaded:
    benchmark_id: int
    tick: int
    facts: policy.Facts
    policy: SharingPolicy
    name: str
    metrics_digest: str | None
    public: bool = False  # shown to everyone (approved and valid), not only its committee and admins
    replies: dict[Hashable, bytes] = field(default_factory=dict)  # encoded answers at this tick

    #: What the encoded answers of one benchmark may hold; the oldest go first.
    REPLY_BUDGET = 32 * 2**20

    def reply(self, key: Hashable, encode: Callable[[], bytes]) -> bytes:
        """The answer kept under ``key`` since the board last changed, or ``encode``'s, kept."""
        reply = self.replies.get(key)
        if reply is None:
            reply = self.replies[key] = encode()
            kept = sum(map(len, self.replies.values()))
            while kept > self.REPLY_BUDGET and len(self.replies) > 1:
                kept -= len(self.replies.pop(next(iter(self.replies))))
        return reply


class Boards:
    def __init__(self) -> None:
        self._loaded: dict[int, Loaded] = {}

    async def get(self, session: AsyncSession, benchmark_id: int) -> Loaded | None:
        clock = (await session.execute(select(Clock.tick, Clock.meta_tick).where(Clock.id == 1))).first()
        tick, meta_tick = clock if clock is not None else (0, 0)
        loaded = self._loaded.get(benchmark_id)
        if loaded is not None and loaded.tick == tick:
            return loaded
        if loaded is None or meta_tick > loaded.tick or not await self._catch_up(session, loaded, tick):
            loaded = await self._load(session, benchmark_id, tick)
            if loaded is None:
                self._loaded.pop(benchmark_id, None)
                return None
            self._loaded[benchmark_id] = loaded
        return loaded

    async def _catch_up(self, session: AsyncSession, loaded: Loaded, tick: int) -> bool:
        """Put the results and failed runs written since ``loaded.tick``; False if one names a model
        or dataset the loaded facts do not know (the benchmark must then load afresh)."""
        facts = loaded.facts
        rows = (
            await session.execute(
                select(*_CELL_COLUMNS).where(Result.benchmark_id == loaded.benchmark_id, Result.revision > loaded.tick)
            )
        ).all()
        failed = (
            await session.execute(
                select(*_FAILURE_COLUMNS).where(
                    FailedRun.benchmark_id == loaded.benchmark_id, FailedRun.revision > loaded.tick
                )
            )
        ).all()
        if any(r.model_id not in facts.model_names or r.dataset_id not in facts.dataset_labels for r in rows + failed):
            return False
        for row in rows:
            facts.standings.put(_cell(row, facts.dataset_cases, loaded.metrics_digest))
        for row in failed:
            facts.standings.put_failure(failures.to_domain(row))
        loaded.tick = tick
        loaded.replies.clear()
        return True

    async def _load(self, session: AsyncSession, benchmark_id: int, tick: int) -> Loaded | None:
        benchmark = await session.get(BenchmarkInfo, benchmark_id)
        if benchmark is None:
            return None
        results = (await session.execute(select(*_CELL_COLUMNS).where(Result.benchmark_id == benchmark_id))).all()
        failed = (await session.execute(select(*_FAILURE_COLUMNS).where(FailedRun.benchmark_id == benchmark_id))).all()
        joined = (await session.scalars(select(Participant).where(Participant.benchmark_id == benchmark_id))).all()
        model_ids = {r.model_id for r in results + failed} | {benchmark.reference_model_id}
        model_ids |= {p.component_id for p in joined if p.kind == "model"}
        approved = frozenset(p.component_id for p in joined if p.kind == "dataset")
        dataset_ids = {r.dataset_id for r in results + failed} | approved
        models = (await session.scalars(select(ModelInfo).where(ModelInfo.model_id.in_(model_ids)))).all()
        infos = (await session.scalars(select(DatasetInfo).where(DatasetInfo.dataset_id.in_(dataset_ids)))).all()
        digest = None
        if benchmark.metrics_container_id is not None:
            container = await session.get(ContainerInfo, benchmark.metrics_container_id)
            digest = container.image_digest if container is not None else None

        per_site = Counter(d.site for d in infos)
        labels = {d.dataset_id: d.site if per_site[d.site] == 1 else f"{d.site}/{d.name}" for d in infos}
        labels.update({d: f"dataset {d}" for d in dataset_ids - labels.keys()})
        model_names = {m.model_id: m.name for m in models}
        model_names.update({m: f"model {m}" for m in model_ids - model_names.keys()})
        model_owners = {m.model_id: m.owner for m in models}
        dataset_owners = {d.dataset_id: d.owner for d in infos}
        cases = {d.dataset_id: d.cases for d in infos}
        owners = {
            model_owners.get(p.component_id) if p.kind == "model" else dataset_owners.get(p.component_id)
            for p in joined
        }
        standings = domain.Standings(
            [domain.Metric(**m) for m in benchmark.metrics], benchmark.primary_metric, benchmark.reference_model_id
        )
        for row in results:
            standings.put(_cell(row, cases, digest))
        for row in failed:
            standings.put_failure(failures.to_domain(row))
        facts = policy.Facts(
            owner=benchmark.owner,
            standings=standings,
            model_names=model_names,
            model_owners=model_owners,
            dataset_labels=labels,
            dataset_owners=dataset_owners,
            dataset_cases=cases,
            participants=frozenset(o for o in owners if o),
            approved_datasets=approved,
        )
        public = await listings.is_public(session, "benchmark", benchmark_id)
        policy_ = SharingPolicy.model_validate(benchmark.policy)
        return Loaded(benchmark_id, tick, facts, policy_, benchmark.name, digest, public)


def _cell(row: Any, cases: dict[int, int | None], metrics_digest: str | None) -> domain.Cell:
    scored_by = row.container_digests.get("metrics")
    return domain.Cell(
        row.model_id,
        row.dataset_id,
        row.metrics,
        row.partial,
        cases.get(row.dataset_id),
        stale=metrics_digest is not None and scored_by is not None and scored_by != metrics_digest,
    )
