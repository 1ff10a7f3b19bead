"""What a site's data owner does with their datasets, on the site's own database: hand one to the
agent (``medperf dataset submit``), consent to its registration or decline it, withdraw it, and
check that its prepared data still matches what was registered.

As in ``services.executor.operations``, nothing here needs the network: the running agent
(``services.executor.intake``) acts on these rows within a second.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select

from services.executor.hashing import Progress
from services.executor.manifest import DatasetChanged, check_before_job
from services.executor.operations import NotPossible
from services.executor.settings import LocalDataset
from services.executor.store import DatasetSubmission, PreparedDataset, SubmissionProgress, Withdrawal
from shared.db import UnitOfWork

#: A submission in one of these may be submitted again: prepared afresh from the raw data.
RESTARTABLE = ("declined", "failed")


async def submit(uow: UnitOfWork, local: LocalDataset, consent: bool) -> DatasetSubmission:
    """Hand ``local`` to the agent, or find the same submission (same name and benchmark) to follow
    again; one that was declined or failed starts over. ``consent``: given in advance (``-y``)."""
    async with uow:
        sub = await uow.session.scalar(
            select(DatasetSubmission).where(
                DatasetSubmission.benchmark == local.benchmark, DatasetSubmission.name == local.name
            )
        )
        paths = (str(local.data_path), str(local.labels_path))
        if sub is not None and sub.status not in RESTARTABLE:
            if (sub.data_path, sub.labels_path) != paths:
                raise NotPossible(
                    f"dataset {local.name} was submitted for {local.benchmark} from {sub.data_path} and "
                    f"{sub.labels_path} ({sub.status}); give it another name to submit other data"
                )
            if consent and sub.consent == "pending":
                sub.consent = "given"
            await uow.commit()
            return sub
        if sub is not None:  # starts over: the last attempt's progress would show as this one's
            await uow.session.execute(delete(SubmissionProgress).where(SubmissionProgress.submission_id == sub.id))
        sub = sub or DatasetSubmission(name=local.name, benchmark=local.benchmark)
        sub.data_path, sub.labels_path = paths
        sub.status, sub.consent, sub.stages, sub.detail = "submitted", "given" if consent else "pending", {}, ""
        sub.input_hash = sub.prepared_hash = sub.prepared_path = ""
        sub.statistics, sub.dataset_id, sub.benchmark_id = {}, None, None
        uow.session.add(sub)
        await uow.commit()
        return sub


async def submission(uow: UnitOfWork, sub_id: int) -> DatasetSubmission:
    async with uow:
        sub = await uow.session.get(DatasetSubmission, sub_id)
        if sub is None:
            raise NotPossible(f"no submission {sub_id} at this site")
        return sub


async def progress(uow: UnitOfWork, sub_id: int) -> SubmissionProgress | None:
    """The running stage's progress (bytes hashed, the preparator's report's last lines), if any."""
    async with uow:
        return await uow.session.get(SubmissionProgress, sub_id)


async def decide(uow: UnitOfWork, sub_id: int, consent: bool) -> DatasetSubmission:
    """The data owner's answer, once the prepared dataset's hashes and statistics were shown."""
    async with uow:
        sub = await uow.session.get(DatasetSubmission, sub_id)
        if sub is None or sub.status != "prepared":
            raise NotPossible(f"submission {sub_id} is not waiting for consent")
        sub.consent = "given" if consent else "declined"
        if not consent:
            sub.status, sub.detail = "declined", "the data owner declined; nothing left the site"
        await uow.commit()
        return sub


async def registered(uow: UnitOfWork, which: str) -> list[PreparedDataset]:
    """This site's registered datasets named ``which`` (a name, or the registry's id)."""
    async with uow:
        query = select(PreparedDataset).where(PreparedDataset.dataset_id.is_not(None))
        if which.isdigit():
            query = query.where(PreparedDataset.dataset_id == int(which))
        else:
            query = query.where(PreparedDataset.name == which)
        rows = list((await uow.session.scalars(query.order_by(PreparedDataset.id))).all())
    if not rows:
        raise NotPossible(f"no registered dataset {which} at this site (see `medperf job ls` and `medperf dataset ls`)")
    return rows


async def withdraw(uow: UnitOfWork, which: str) -> list[Withdrawal]:
    """Ask the agent to stop new jobs for the datasets named ``which``."""
    rows = await registered(uow, which)
    async with uow:
        asked = []
        for dataset_id in dict.fromkeys(row.dataset_id for row in rows):
            assert dataset_id is not None
            withdrawal = Withdrawal(dataset_id=dataset_id)
            uow.session.add(withdrawal)
            asked.append(withdrawal)
        await uow.commit()
        return asked


async def withdrawal(uow: UnitOfWork, withdrawal_id: int) -> Withdrawal:
    async with uow:
        found = await uow.session.get(Withdrawal, withdrawal_id)
        assert found is not None
        return found


@dataclass(frozen=True)
class Check:
    dataset: PreparedDataset
    found: str  # the hash of the prepared data now; empty if it is gone
    changes: str = ""  # which files changed, added or removed, when the data no longer matches

    @property
    def matches(self) -> bool:
        return self.found == self.dataset.prepared_hash


async def check(uow: UnitOfWork, which: str, progress: Progress | None = None) -> list[Check]:
    """Read every byte of the prepared data again (a job reads only what changed since the last
    check) and compare it with the registration, naming the files that changed; ``progress`` is
    told the bytes read (from the hashing threads)."""
    checks = []
    for row in await registered(uow, which):
        path = Path(row.prepared_path)
        found, changes = "", ""
        if (path / "data").is_dir() and (path / "labels").is_dir():
            try:
                checked = await asyncio.to_thread(
                    check_before_job, path, (path / "data", path / "labels"), row.prepared_hash, 0.0, progress
                )
                found = checked.digest
            except DatasetChanged as changed:
                found, changes = changed.verification.digest, str(changed)
        checks.append(Check(row, found, changes))
    return checks
