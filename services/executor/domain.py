"""The rules of a site's jobs, free of I/O: which transitions are legal, whose fault a failure
was, and what is retried."""

from __future__ import annotations

import hashlib
import json

from shared.events import FailureKind, JobStatus

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled"}),
    # running -> queued: an infrastructure failure waiting for its retry, or an agent restart.
    "running": frozenset({"succeeded", "failed", "cancelled", "queued"}),
    # Finished jobs come back only through an explicit re-run, as a new job with the same key.
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}
UNFINISHED: frozenset[str] = frozenset({"queued", "running"})
MAX_ATTEMPTS = 4


class IllegalTransition(ValueError):
    pass


def transition(current: str, new: JobStatus) -> JobStatus:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"a {current} job cannot become {new}")
    return new


#: Whose fault a failed task is: a model's, the metrics container's, or the data's (preparation).
TASK_FAULT: dict[str, FailureKind] = {
    "infer": "model",
    "evaluate": "metrics",
    "prepare": "data",
    "sanity_check": "data",
    "statistics": "data",
    "verify": "data",
}


def fault_of_task(task: str) -> FailureKind:
    return TASK_FAULT.get(task, "infrastructure")


#: Whose fault a refused hosted file (image archive, additional files) is: whoever registered the
#: container the task belongs to. The data preparator is the benchmark's, not the site's data.
ASSET_FAULT: dict[str, FailureKind] = {
    "infer": "model",
    "evaluate": "metrics",
    "prepare": "benchmark",
    "sanity_check": "benchmark",
    "statistics": "benchmark",
}


def fault_of_asset(task: str) -> FailureKind:
    return ASSET_FAULT.get(task, "infrastructure")


def retry_after(failure: FailureKind, attempts: int, first_delay: float = 5.0) -> float | None:
    """Seconds to wait before the next attempt, or None when the job must fail for good: only
    infrastructure is retried (a model that crashed, or a file that fails its hash, will again),
    with backoff."""
    if failure != "infrastructure" or attempts >= MAX_ATTEMPTS:
        return None
    return min(first_delay * 2 ** (attempts - 1), 300.0)


def blocks_new_run(status: str, failure: str | None) -> bool:
    """Whether an existing job with the same key means a new trigger must not queue another:
    anything unfinished or succeeded, or a failure that was the model's, metrics' or data's (it
    would fail again; a re-run can still be asked for)."""
    return status in UNFINISHED or status == "succeeded" or (status == "failed" and failure != "infrastructure")


def pin_key(*pinned: object) -> str:
    """A job's key from what pins its work: the same key is the same work."""
    return hashlib.sha256(json.dumps(pinned).encode()).hexdigest()
