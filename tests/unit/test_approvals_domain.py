"""The approval rules as pure functions: who may decide what, from which state, and why not."""

from __future__ import annotations

import pytest

from services.approvals.domain import Party, Refusal, auto_approves, decide_association, decide_benchmark, may_request

ALICE, BOB, CAROL = "alice", "bob", "carol"  # benchmark owner, component owner, stranger
PARTIES = Party(benchmark_owner=ALICE, component_owner=BOB)
SAME_OWNER = Party(benchmark_owner=ALICE, component_owner=ALICE)


def refusal(call, *args, **kwargs) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call(*args, **kwargs)
    assert str(caught.value) == caught.value.reason
    return caught.value


# --- decide_benchmark --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "approve", "expected"),
    [
        ("PENDING", True, "APPROVED"),
        ("PENDING", False, "REJECTED"),
        ("APPROVED", False, "REJECTED"),
    ],
)
def test_decide_benchmark_transitions(status: str, approve: bool, expected: str) -> None:
    assert decide_benchmark(status, actor_is_admin=True, approve=approve) == expected


@pytest.mark.parametrize("status", ["PENDING", "APPROVED", "REJECTED"])
@pytest.mark.parametrize("approve", [True, False])
def test_decide_benchmark_refuses_non_admins_whatever_the_state(status: str, approve: bool) -> None:
    r = refusal(decide_benchmark, status, actor_is_admin=False, approve=approve)
    assert r.code == "forbidden"
    assert "admin" in r.reason


@pytest.mark.parametrize("approve", [True, False])
def test_rejected_benchmark_cannot_be_redecided(approve: bool) -> None:
    r = refusal(decide_benchmark, "REJECTED", actor_is_admin=True, approve=approve)
    assert r.code == "conflict"
    assert "rejected" in r.reason


def test_approved_benchmark_cannot_be_approved_twice() -> None:
    r = refusal(decide_benchmark, "APPROVED", actor_is_admin=True, approve=True)
    assert r.code == "conflict"
    assert "already approved" in r.reason


# --- may_request -------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark_status", ["PENDING", "REJECTED"])
def test_may_request_refuses_until_the_benchmark_is_approved(benchmark_status: str) -> None:
    r = refusal(may_request, None, benchmark_status, ALICE, PARTIES, is_admin=True)
    assert r.code == "conflict"
    assert benchmark_status in r.reason
    assert "admin approves" in r.reason  # says what would open it


def test_may_request_refuses_a_stranger() -> None:
    r = refusal(may_request, None, "APPROVED", CAROL, PARTIES, is_admin=False)
    assert r.code == "forbidden"
    assert "benchmark owner" in r.reason and "component's owner" in r.reason


@pytest.mark.parametrize(
    ("latest", "words"),
    [("PENDING", "already pending"), ("APPROVED", "already approved")],
)
@pytest.mark.parametrize(("actor", "is_admin"), [(ALICE, False), (BOB, False), (CAROL, True)])
def test_may_request_refuses_while_pending_or_once_approved(
    latest: str, words: str, actor: str, is_admin: bool
) -> None:
    r = refusal(may_request, latest, "APPROVED", actor, PARTIES, is_admin=is_admin)
    assert r.code == "conflict"
    assert words in r.reason


@pytest.mark.parametrize("latest", [None, "REJECTED"])
@pytest.mark.parametrize(("actor", "is_admin"), [(ALICE, False), (BOB, False), (CAROL, True), (ALICE, True)])
def test_may_request_allows_parties_and_admins_when_nothing_is_open(
    latest: str | None, actor: str, is_admin: bool
) -> None:
    assert may_request(latest, "APPROVED", actor, PARTIES, is_admin=is_admin) is None


# --- auto_approves -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parties", "initiator", "passed", "expected"),
    [
        (SAME_OWNER, ALICE, True, True),
        (SAME_OWNER, ALICE, None, True),  # not reported yet is not a failure
        (SAME_OWNER, ALICE, False, False),  # a failed test always needs a human
        (SAME_OWNER, CAROL, True, False),  # an admin initiating for someone else
        (PARTIES, ALICE, True, False),
        (PARTIES, BOB, True, False),
        (Party(benchmark_owner=BOB, component_owner=ALICE), ALICE, True, False),
    ],
)
def test_auto_approves(parties: Party, initiator: str, passed: bool | None, expected: bool) -> None:
    assert auto_approves(parties, initiator, passed) is expected


# --- decide_association ------------------------------------------------------------------------


def decide(
    *,
    latest: str | None = "PENDING",
    initiator: str = BOB,
    actor: str = ALICE,
    parties: Party = PARTIES,
    is_admin: bool = False,
    approve: bool = True,
    passed: bool | None = True,
) -> str:
    return decide_association(latest, initiator, actor, parties, is_admin, approve, passed)


@pytest.mark.parametrize(
    ("latest", "shown"),
    [(None, "not requested"), ("APPROVED", "APPROVED"), ("REJECTED", "REJECTED")],
)
@pytest.mark.parametrize("approve", [True, False])
def test_decide_association_needs_a_pending_request(latest: str | None, shown: str, approve: bool) -> None:
    r = refusal(decide, latest=latest, approve=approve, is_admin=True)
    assert r.code == "conflict"
    assert "no pending request" in r.reason
    assert f"(the association is {shown})" in r.reason


@pytest.mark.parametrize("approve", [True, False])
def test_decide_association_refuses_a_stranger(approve: bool) -> None:
    r = refusal(decide, actor=CAROL, approve=approve)
    assert r.code == "forbidden"
    assert "admin" in r.reason


@pytest.mark.parametrize(("initiator", "actor"), [(BOB, BOB), (ALICE, ALICE)])
def test_initiator_cannot_approve_own_request(initiator: str, actor: str) -> None:
    r = refusal(decide, initiator=initiator, actor=actor)
    assert r.code == "forbidden"
    assert "other party must approve" in r.reason


@pytest.mark.parametrize(("initiator", "actor"), [(BOB, BOB), (ALICE, ALICE)])
def test_initiator_may_withdraw_by_rejecting(initiator: str, actor: str) -> None:
    assert decide(initiator=initiator, actor=actor, approve=False, passed=None) == "REJECTED"


@pytest.mark.parametrize(("initiator", "actor"), [(BOB, ALICE), (ALICE, BOB)])
def test_the_other_party_approves(initiator: str, actor: str) -> None:
    assert decide(initiator=initiator, actor=actor) == "APPROVED"


@pytest.mark.parametrize(
    ("passed", "words"),
    [(None, "has not reported yet"), (False, "failed")],
)
def test_approval_requires_a_passed_compatibility_test(passed: bool | None, words: str) -> None:
    r = refusal(decide, passed=passed)
    assert r.code == "conflict"
    assert f"the compatibility test {words}" in r.reason
    assert "approve once it has passed" in r.reason


@pytest.mark.parametrize("passed", [None, False, True])
def test_rejection_does_not_depend_on_the_compatibility_test(passed: bool | None) -> None:
    assert decide(approve=False, passed=passed) == "REJECTED"


def test_admin_needs_a_passed_test_too() -> None:
    r = refusal(decide, actor=CAROL, is_admin=True, passed=False)
    assert r.code == "conflict"


@pytest.mark.parametrize(("initiator", "actor"), [(CAROL, CAROL), (ALICE, ALICE)])
def test_admin_may_approve_a_request_they_initiated(initiator: str, actor: str) -> None:
    assert decide(initiator=initiator, actor=actor, is_admin=True) == "APPROVED"


def test_admin_stranger_may_decide() -> None:
    assert decide(actor=CAROL, is_admin=True) == "APPROVED"
    assert decide(actor=CAROL, is_admin=True, approve=False) == "REJECTED"
