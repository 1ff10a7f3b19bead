"""Aggregator handlers: keep the read model current from events, and answer leaderboard queries."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from services.aggregator import domain
from services.aggregator.store import BenchmarkInfo, DatasetInfo, ModelInfo, Result
from shared.commands import GetLeaderboard, Outcome
from shared.db import UnitOfWork
from shared.events import BenchmarkSubmitted, DatasetRegistered, ModelRegistered, ResultReported
from shared.messaging import NotYet, PermanentFailure


async def record_benchmark(event: BenchmarkSubmitted, uow: UnitOfWork) -> None:
    async with uow:
        if await uow.claim(event):
            uow.session.add(
                BenchmarkInfo(
                    benchmark_id=event.benchmark_id,
                    name=event.name,
                    owner=event.owner,
                    reference_model_id=event.reference_model_id,
                    metrics=[m.model_dump() for m in event.metrics],
                    primary_metric=event.primary_metric,
                )
            )
            await uow.commit()


async def record_model(event: ModelRegistered, uow: UnitOfWork) -> None:
    async with uow:
        if await uow.claim(event):
            uow.session.add(ModelInfo(model_id=event.model_id, name=event.name, owner=event.owner))
            await uow.commit()


async def record_dataset(event: DatasetRegistered, uow: UnitOfWork) -> None:
    async with uow:
        if await uow.claim(event):
            uow.session.add(
                DatasetInfo(dataset_id=event.dataset_id, name=event.name, site=event.site, owner=event.owner)
            )
            await uow.commit()


async def record_result(event: ResultReported, uow: UnitOfWork) -> None:
    async with uow:
        if not await uow.claim(event):
            return
        benchmark = await uow.session.get(BenchmarkInfo, event.benchmark_id)
        if benchmark is None:
            # Registry events travel on another stream and may not have arrived yet: retry later.
            raise NotYet(f"benchmark {event.benchmark_id} not known yet")
        declared = [domain.Metric(**m) for m in benchmark.metrics]
        if missing := domain.missing_metrics(declared, event.metrics):
            raise PermanentFailure(f"result lacks the benchmark's declared metric(s) {', '.join(missing)}")
        key = (event.benchmark_id, event.model_id, event.dataset_id)
        row = await uow.session.get(Result, key)
        if row is not None and row.reported_at >= event.occurred_at:
            await uow.commit()  # an older result arriving late must not replace a newer one
            return
        if row is None:
            row = Result(benchmark_id=event.benchmark_id, model_id=event.model_id, dataset_id=event.dataset_id)
            uow.session.add(row)
        row.site, row.metrics, row.partial = event.site, dict(event.metrics), event.partial
        row.container_digests, row.dataset_hash = dict(event.container_digests), event.dataset_hash
        row.event_id, row.reported_at = str(event.event_id), event.occurred_at
        await uow.commit()


async def get_leaderboard(query: GetLeaderboard, uow: UnitOfWork) -> Outcome:
    async with uow:
        s = uow.session
        benchmark = await s.get(BenchmarkInfo, query.benchmark_id)
        if benchmark is None:
            return Outcome.refused("not_found", f"no benchmark {query.benchmark_id} has results here")
        results = (await s.scalars(select(Result).where(Result.benchmark_id == query.benchmark_id))).all()
        model_ids = {r.model_id for r in results} | {benchmark.reference_model_id}
        dataset_ids = {r.dataset_id for r in results}
        models = {
            m.model_id: m.name for m in (await s.scalars(select(ModelInfo).where(ModelInfo.model_id.in_(model_ids))))
        }
        infos = (await s.scalars(select(DatasetInfo).where(DatasetInfo.dataset_id.in_(dataset_ids)))).all()
        per_site = Counter(d.site for d in infos)
        labels = {d.dataset_id: d.site if per_site[d.site] == 1 else f"{d.site}/{d.name}" for d in infos}
        labels.update({d: f"dataset {d}" for d in dataset_ids - labels.keys()})
        board = domain.leaderboard(
            [domain.Metric(**m) for m in benchmark.metrics],
            benchmark.primary_metric,
            models,
            labels,
            benchmark.reference_model_id,
            [domain.Cell(r.model_id, r.dataset_id, r.metrics, r.partial) for r in results],
        )
        board.update(benchmark_id=benchmark.benchmark_id, benchmark=benchmark.name)
        return Outcome.accepted(benchmark.benchmark_id, board)
