"""Approval rules, free of I/O. Each function answers one question and says why when it refuses."""

from __future__ import annotations

from dataclasses import dataclass


class Refusal(Exception):
    """A decision the rules forbid; the message tells the user what would make it allowed."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def decide_benchmark(status: str, actor_is_admin: bool, approve: bool) -> str:
    """The benchmark's next status, or a refusal."""
    if not actor_is_admin:
        raise Refusal("forbidden", "only an admin may approve or reject a benchmark")
    if status == "REJECTED":
        raise Refusal("conflict", "this benchmark was rejected; a rejected benchmark cannot be approved or re-decided")
    if status == "APPROVED" and approve:
        raise Refusal("conflict", "this benchmark is already approved")
    return "APPROVED" if approve else "REJECTED"


@dataclass(frozen=True)
class Party:
    benchmark_owner: str
    component_owner: str


def may_request(latest_status: str | None, benchmark_status: str, actor: str, parties: Party, is_admin: bool) -> None:
    if benchmark_status != "APPROVED":
        raise Refusal("conflict", f"the benchmark is {benchmark_status}; associations open once an admin approves it")
    if actor not in (parties.benchmark_owner, parties.component_owner) and not is_admin:
        raise Refusal("forbidden", "only the benchmark owner or the component's owner may request this association")
    if latest_status == "PENDING":
        raise Refusal("conflict", "a request for this association is already pending a decision")
    if latest_status == "APPROVED":
        raise Refusal("conflict", "this association is already approved")


def auto_approves(parties: Party, initiator: str, compatibility_passed: bool | None) -> bool:
    """Same owner on both sides means nobody else's consent is needed, unless the test failed."""
    return parties.benchmark_owner == parties.component_owner == initiator and compatibility_passed is not False


def decide_association(
    latest_status: str | None,
    initiator: str,
    actor: str,
    parties: Party,
    is_admin: bool,
    approve: bool,
    compatibility_passed: bool | None,
) -> str:
    if latest_status != "PENDING":
        raise Refusal(
            "conflict", f"there is no pending request to decide (the association is {latest_status or 'not requested'})"
        )
    if actor not in (parties.benchmark_owner, parties.component_owner) and not is_admin:
        raise Refusal(
            "forbidden", "only the benchmark owner, the component's owner or an admin may decide this request"
        )
    if approve and actor == initiator and not is_admin:
        raise Refusal("forbidden", "you initiated this request; the other party must approve it")
    if approve and compatibility_passed is not True:
        state = "has not reported yet" if compatibility_passed is None else "failed"
        raise Refusal("conflict", f"the compatibility test {state}; approve once it has passed")
    return "APPROVED" if approve else "REJECTED"
