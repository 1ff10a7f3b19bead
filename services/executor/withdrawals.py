"""`medperf dataset withdraw`, and a dataset's association rejected: no new jobs for it at this site."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from services.executor.store import DatasetSubmission, Job, PreparedDataset, Withdrawal
from shared.commands import DecideAssociation
from shared.db import UnitOfWork
from shared.service import ask

if TYPE_CHECKING:
    from services.executor.agent import SiteAgent


async def withdraw(agent: SiteAgent, withdrawal_id: int) -> None:
    """Reject the dataset's association as its owner (a pending request, or an approval: both
    are rejections at the approvals service); queued jobs for it are cancelled."""
    async with agent.uow() as uow:
        withdrawal = await uow.session.get(Withdrawal, withdrawal_id)
        assert withdrawal is not None
        rows = (
            await uow.session.scalars(
                select(PreparedDataset).where(PreparedDataset.dataset_id == withdrawal.dataset_id)
            )
        ).all()
    details = []
    for row in rows:
        outcome = await ask(
            agent.broker,
            DecideAssociation(
                actor=agent.site.owner,
                benchmark_id=row.benchmark_id,
                kind="dataset",
                component_id=withdrawal.dataset_id,
                approve=False,
                reason="withdrawn by the data owner",
            ),
            agent.request_timeout,
        )
        if not outcome.ok and outcome.code != "conflict":  # conflict: nothing pending or approved to reject
            details.append(f"benchmark {row.benchmark_id}: {outcome.reason}")
            continue
        await stop_dataset(agent.uow, withdrawal.dataset_id, "WITHDRAWN")
    async with agent.uow() as uow:
        withdrawal = await uow.session.get(Withdrawal, withdrawal_id)
        assert withdrawal is not None
        withdrawal.status, withdrawal.detail = ("failed", "; ".join(details)) if details else ("done", "")
        await uow.commit()


async def stop_dataset(uow_factory: Callable[[], UnitOfWork], dataset_id: int, status: str) -> None:
    """No new jobs for the dataset: its association is marked, its queued runs cancelled."""
    async with uow_factory() as uow:
        row = await uow.session.scalar(select(PreparedDataset).where(PreparedDataset.dataset_id == dataset_id))
        if row is None:
            return  # another site's dataset
        if row.association != "WITHDRAWN":
            row.association = status
        for job in (
            await uow.session.scalars(
                select(Job).where(Job.dataset_id == dataset_id, Job.kind == "run", Job.status == "queued")
            )
        ).all():
            job.cancel_requested = True  # the runner records it, as for `medperf job cancel`
        for sub in (
            await uow.session.scalars(select(DatasetSubmission).where(DatasetSubmission.dataset_id == dataset_id))
        ).all():
            sub.association = row.association
        await uow.commit()
