"""The rules of a site's jobs (services/executor/domain.py), walked exhaustively."""

from __future__ import annotations

import itertools

import pytest

from services.executor import domain

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
LEGAL = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "queued"),
}


@pytest.mark.parametrize(("current", "new"), list(itertools.product(STATUSES, STATUSES)))
def test_every_transition_is_legal_or_refused_as_listed(current: str, new: str) -> None:
    if (current, new) in LEGAL:
        assert domain.transition(current, new) == new  # type: ignore[arg-type]
    else:
        with pytest.raises(domain.IllegalTransition, match=f"a {current} job cannot become {new}"):
            domain.transition(current, new)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "fault"),
    [("infer", "model"), ("evaluate", "metrics"), ("prepare", "data"), ("verify", "data"), ("mount", "infrastructure")],
)
def test_a_failed_task_names_whose_fault_it_was(task: str, fault: str) -> None:
    assert domain.fault_of_task(task) == fault


def test_only_infrastructure_is_retried_with_growing_delays_and_a_limit() -> None:
    for fault in ("model", "metrics", "data"):
        assert domain.retry_after(fault, 1) is None  # type: ignore[arg-type]
    delays = [domain.retry_after("infrastructure", n) for n in range(1, domain.MAX_ATTEMPTS)]
    assert delays == sorted(delays) and all(d is not None and d > 0 for d in delays)
    assert domain.retry_after("infrastructure", domain.MAX_ATTEMPTS) is None


@pytest.mark.parametrize(
    ("status", "failure", "blocks"),
    [
        ("queued", None, True),
        ("running", None, True),
        ("succeeded", None, True),
        ("failed", "model", True),
        ("failed", "metrics", True),
        ("failed", "data", True),
        ("failed", "infrastructure", False),
        ("cancelled", None, False),
    ],
)
def test_which_earlier_jobs_stop_a_trigger_from_queueing_the_same_work(
    status: str, failure: str | None, blocks: bool
) -> None:
    assert domain.blocks_new_run(status, failure) is blocks
