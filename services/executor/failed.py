"""A task that failed for a reason that is not the site's, and whose fault it was."""

from __future__ import annotations

from services.executor.domain import fault_of_task
from services.executor.runtime import TaskOutcome
from shared.events import FailureKind


class TaskFailed(Exception):
    """A task failed for a reason that is not the site's: ``fault`` says whose (by default the
    task's container's, ``domain.TASK_FAULT``), and it is final, never retried."""

    def __init__(
        self, task: str, outcome: TaskOutcome | None, detail: str = "", fault: FailureKind | None = None
    ) -> None:
        if outcome is not None and outcome.exceeded:
            detail = detail or outcome.exceeded
        elif outcome is not None and outcome.timed_out:
            detail = detail or f"timed out after {outcome.duration_seconds:.0f} s"
        elif outcome is not None:
            detail = detail or f"exited with {outcome.exit_code}"
        super().__init__(f"{task} failed: {detail}")
        self.task = task
        self.fault: FailureKind = fault or fault_of_task(task)
        self.log_tail = outcome.log_tail if outcome else ""
