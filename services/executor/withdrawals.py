"""`medperf dataset withdraw`, and a dataset's association rejected: no new jobs for it at this site."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select

from services.executor.store import DatasetSubmission, Job, PreparedDataset, Withdrawal
from shared.db import UnitOfWork

if TYPE_CHECKING:
    from services.executor.agent import SiteAgent


async def withdraw(agent: SiteAgent, withdrawal_id: int) -> None:
    """No new jobs for the dataset here; its queued runs are cancelled. Rejecting its association
    at the federation is the data owner's own decision, sent with their own credentials by
    `medperf dataset withdraw`: a site's NATS credentials may not decide associations, since a
    decision's actor would be the site's word alone."""
    async with agent.uow() as uow:
        withdrawal = await uow.session.get(Withdrawal, withdrawal_id)
        assert withdrawal is not None
        dataset_id = withdrawal.dataset_id
    await stop_dataset(agent.uow, dataset_id, "WITHDRAWN")
    async with agent.uow() as uow:
        withdrawal = await uow.session.get(Withdrawal, withdrawal_id)
        assert withdrawal is not None
        withdrawal.status, withdrawal.detail = "done", ""
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
