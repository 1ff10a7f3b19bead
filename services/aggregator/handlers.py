"""Aggregator handlers: keep the read model current from events, and answer leaderboard queries."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from services.aggregator import domain, policy
from services.aggregator.store import BenchmarkInfo, DatasetInfo, ModelInfo, Participant, Result
from shared.commands import GetLeaderboard, Outcome, SetSharingPolicy
from shared.db import UnitOfWork
from shared.events import (
    AssociationApproved,
    AssociationRejected,
    BenchmarkSubmitted,
    DatasetRegistered,
    ModelRegistered,
    ResultReported,
    SharingPolicy,
    SharingPolicyChanged,
    utcnow,
)
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
            cases = event.statistics.get("cases")
            uow.session.add(
                DatasetInfo(
                    dataset_id=event.dataset_id,
                    name=event.name,
                    site=event.site,
                    owner=event.owner,
                    cases=int(cases) if isinstance(cases, int | float) else None,
                )
            )
            await uow.commit()


async def record_result(event: ResultReported, uow: UnitOfWork, subject: str | None = None) -> None:
    """``subject``: where the event was published. A site's credentials allow it only its own
    subjects, so a body naming another site is a forgery (or a bug) and is refused, never counted."""
    if subject is not None and (claimed := domain.site_of_subject(subject)) != event.site:
        raise PermanentFailure(f"result names site {event.site!r} but was published on {claimed!r}'s subject {subject}")
    async with uow:
        if not await uow.claim(event):
            return
        dataset = await uow.session.get(DatasetInfo, event.dataset_id)
        if dataset is not None and dataset.site != event.site:
            raise PermanentFailure(f"dataset {event.dataset_id} belongs to site {dataset.site!r}, not {event.site!r}")
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


async def record_association(event: AssociationApproved | AssociationRejected, uow: UnitOfWork) -> None:
    """Approved components make their owners participants; a revoked one (rejected later) no longer."""
    async with uow:
        if not await uow.claim(event):
            return
        key = (event.benchmark_id, event.kind, event.component_id)
        row = await uow.session.get(Participant, key)
        if isinstance(event, AssociationApproved) and row is None:
            uow.session.add(
                Participant(benchmark_id=event.benchmark_id, kind=event.kind, component_id=event.component_id)
            )
        elif isinstance(event, AssociationRejected) and row is not None:
            await uow.session.delete(row)
        await uow.commit()


async def set_sharing_policy(cmd: SetSharingPolicy, uow: UnitOfWork) -> Outcome:
    async with uow:
        benchmark = await uow.session.get(BenchmarkInfo, cmd.benchmark_id)
        if benchmark is None:
            return Outcome.refused("not_found", f"no benchmark {cmd.benchmark_id} is known to the aggregator")
        if not (cmd.is_admin or cmd.actor == benchmark.owner):
            return Outcome.refused(
                "forbidden", "only the benchmark's committee (its owner) or an admin sets its policy"
            )
        old = SharingPolicy.model_validate(benchmark.policy)
        benchmark.policy = cmd.policy.model_dump(mode="json")
        uow.emit(SharingPolicyChanged(actor=cmd.actor, benchmark_id=cmd.benchmark_id, old=old, new=cmd.policy))
        await uow.commit()
        return Outcome.accepted(cmd.benchmark_id, {"policy": benchmark.policy})


async def record_policy_change(event: SharingPolicyChanged, uow: UnitOfWork) -> None:
    """Only a replay of the history needs this: live, the policy changed with the event's commit."""
    async with uow:
        benchmark = await uow.session.get(BenchmarkInfo, event.benchmark_id)
        if benchmark is not None:
            benchmark.policy = event.new.model_dump(mode="json")
            await uow.commit()


async def get_leaderboard(query: GetLeaderboard, uow: UnitOfWork) -> Outcome:
    async with uow:
        s = uow.session
        benchmark = await s.get(BenchmarkInfo, query.benchmark_id)
        if benchmark is None:
            return Outcome.refused("not_found", f"no benchmark {query.benchmark_id} has results here")
        results = (await s.scalars(select(Result).where(Result.benchmark_id == query.benchmark_id))).all()
        joined = (await s.scalars(select(Participant).where(Participant.benchmark_id == query.benchmark_id))).all()
        model_ids = {r.model_id for r in results} | {benchmark.reference_model_id}
        model_ids |= {p.component_id for p in joined if p.kind == "model"}
        dataset_ids = {r.dataset_id for r in results} | {p.component_id for p in joined if p.kind == "dataset"}
        models = (await s.scalars(select(ModelInfo).where(ModelInfo.model_id.in_(model_ids)))).all()
        infos = (await s.scalars(select(DatasetInfo).where(DatasetInfo.dataset_id.in_(dataset_ids)))).all()
        per_site = Counter(d.site for d in infos)
        labels = {d.dataset_id: d.site if per_site[d.site] == 1 else f"{d.site}/{d.name}" for d in infos}
        labels.update({d: f"dataset {d}" for d in dataset_ids - labels.keys()})
        model_owners = {m.model_id: m.owner for m in models}
        dataset_owners = {d.dataset_id: d.owner for d in infos}
        cases = {d.dataset_id: d.cases for d in infos}
        owners = {
            model_owners.get(p.component_id) if p.kind == "model" else dataset_owners.get(p.component_id)
            for p in joined
        }
        facts = policy.Facts(
            owner=benchmark.owner,
            metrics=[domain.Metric(**m) for m in benchmark.metrics],
            primary=benchmark.primary_metric,
            reference_model_id=benchmark.reference_model_id,
            model_names={m.model_id: m.name for m in models},
            model_owners=model_owners,
            dataset_labels=labels,
            dataset_owners=dataset_owners,
            dataset_cases=cases,
            participants=frozenset(o for o in owners if o),
            cells=[
                domain.Cell(r.model_id, r.dataset_id, r.metrics, r.partial, cases.get(r.dataset_id)) for r in results
            ],
        )
        try:
            board = policy.view(
                facts,
                SharingPolicy.model_validate(benchmark.policy),
                policy.Viewer(query.actor, query.is_admin),
                utcnow(),
            )
        except policy.NotShared as refusal:
            return Outcome.refused("forbidden", str(refusal))
        board.update(benchmark_id=benchmark.benchmark_id, benchmark=benchmark.name)
        return Outcome.accepted(benchmark.benchmark_id, board)
