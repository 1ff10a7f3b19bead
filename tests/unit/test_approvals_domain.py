"""The approval rules as pure functions: who may decide what, from which state, and why not."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.approvals.domain import (
    TRACKED,
    BenchmarkFacts,
    ComponentFacts,
    Refusal,
    Visibility,
    apply_edit,
    association_action,
    auto_approval,
    auto_approver,
    benchmark_auto_approved,
    check_joinable,
    decide_association,
    decide_benchmark,
    list_visibility,
    may_configure,
    may_request,
    may_see_benchmark,
    may_see_component,
    normalise_allowlist,
    trail_scope,
)

ALICE, BOB, CAROL = "alice", "bob", "carol"  # benchmark owner, component owner, stranger
BENCHMARK = BenchmarkFacts(id=1, owner=ALICE, status="APPROVED", data_preparator_id=7)
MODEL = ComponentFacts(kind="model", id=2, owner=BOB, state="OPERATION")
DATASET = ComponentFacts(kind="dataset", id=3, owner=BOB, state="OPERATION", data_preparator_id=7)
ALICES_MODEL = replace(MODEL, owner=ALICE)


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
        ("APPROVED", False, "REJECTED"),  # an admin may withdraw an approval
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
def test_rejected_benchmark_is_final(approve: bool) -> None:
    r = refusal(decide_benchmark, "REJECTED", actor_is_admin=True, approve=approve)
    assert r.code == "conflict"
    assert "rejected" in r.reason


def test_approved_benchmark_cannot_be_approved_twice() -> None:
    r = refusal(decide_benchmark, "APPROVED", actor_is_admin=True, approve=True)
    assert r.code == "conflict"
    assert "already approved" in r.reason


@pytest.mark.parametrize("status", ["PENDING", "APPROVED", "REJECTED"])
@pytest.mark.parametrize("approve", [True, False])
def test_no_decision_leads_back_to_pending(status: str, approve: bool) -> None:
    with contextlib.suppress(Refusal):  # a refusal leaves the status as it was
        assert decide_benchmark(status, actor_is_admin=True, approve=approve) != "PENDING"


@pytest.mark.parametrize(
    ("owner", "listed", "expected"),
    [(ALICE, [ALICE, BOB], True), (CAROL, [ALICE, BOB], False), (ALICE, [], False), ("Alice", [ALICE], False)],
)
def test_benchmark_auto_approve_list(owner: str, listed: list[str], expected: bool) -> None:
    assert benchmark_auto_approved(owner, listed) is expected


# --- may_configure (auto-approval policy, priorities) ------------------------------------------


@pytest.mark.parametrize(("actor", "is_admin"), [(ALICE, False), (CAROL, True), (BOB, True)])
def test_benchmark_owner_or_admin_may_configure(actor: str, is_admin: bool) -> None:
    assert may_configure(actor, BENCHMARK, is_admin, "model priorities") is None


@pytest.mark.parametrize("actor", [BOB, CAROL])
def test_others_may_not_configure(actor: str) -> None:
    r = refusal(may_configure, actor, BENCHMARK, False, "model priorities")
    assert r.code == "forbidden"
    assert "owner of benchmark 1 or an admin may set model priorities" in r.reason


@pytest.mark.parametrize(
    ("given", "expected"),
    [([], []), ([" bob ", "carol", "bob"], ["bob", "carol"]), (["x@y.org"], ["x@y.org"])],
)
def test_normalise_allowlist(given: list[str], expected: list[str]) -> None:
    assert normalise_allowlist(given) == expected


def test_allowlist_refuses_blank_names() -> None:
    assert refusal(normalise_allowlist, ["bob", "  "]).code == "invalid"


# --- check_joinable / may_request --------------------------------------------------------------


@pytest.mark.parametrize(
    ("benchmark", "component", "code", "words"),
    [
        (replace(BENCHMARK, status="PENDING"), MODEL, "conflict", "the benchmark is PENDING"),
        (replace(BENCHMARK, status="REJECTED"), MODEL, "conflict", "the benchmark is REJECTED"),
        (replace(BENCHMARK, is_valid=False), MODEL, "conflict", "marked invalid"),
        (replace(BENCHMARK, deleted=True), MODEL, "not_found", "benchmark 1 was deleted"),
        (BENCHMARK, replace(MODEL, state="DEVELOPMENT"), "conflict", "model 2 is in DEVELOPMENT; mark it OPERATION"),
        (BENCHMARK, replace(DATASET, state="DEVELOPMENT"), "conflict", "dataset 3 is in DEVELOPMENT"),
        (BENCHMARK, replace(MODEL, is_valid=False), "conflict", "model 2 was marked invalid"),
        (BENCHMARK, replace(DATASET, deleted=True), "not_found", "dataset 3 was deleted"),
        (BENCHMARK, replace(DATASET, data_preparator_id=8), "invalid", "needs its data preparator 7"),
        (BENCHMARK, replace(DATASET, data_preparator_id=None), "invalid", "prepare the data with it"),
    ],
)
def test_check_joinable_refusals(benchmark: BenchmarkFacts, component: ComponentFacts, code: str, words: str) -> None:
    r = refusal(check_joinable, benchmark, component)
    assert r.code == code
    assert words in r.reason


@pytest.mark.parametrize("component", [MODEL, DATASET, replace(MODEL, data_preparator_id=99)])
def test_check_joinable_accepts_operational_valid_components(component: ComponentFacts) -> None:
    assert check_joinable(BENCHMARK, component) is None  # a model's preparator is irrelevant


@pytest.mark.parametrize("status", ["PENDING", "REJECTED"])
def test_may_request_refuses_until_the_benchmark_is_approved(status: str) -> None:
    r = refusal(may_request, None, replace(BENCHMARK, status=status), MODEL, ALICE, is_admin=True)
    assert r.code == "conflict"
    assert status in r.reason
    assert "admin approves" in r.reason  # says what would open it


def test_may_request_refuses_a_stranger_before_saying_anything_about_the_state() -> None:
    r = refusal(may_request, "PENDING", replace(BENCHMARK, status="PENDING"), MODEL, CAROL, is_admin=False)
    assert r.code == "forbidden"
    assert "benchmark owner" in r.reason and "component's owner" in r.reason


def test_may_request_refuses_a_development_component() -> None:
    r = refusal(may_request, None, BENCHMARK, replace(MODEL, state="DEVELOPMENT"), BOB, is_admin=False)
    assert r.code == "conflict"
    assert "OPERATION" in r.reason


@pytest.mark.parametrize(
    ("latest", "words"),
    [("PENDING", "already pending"), ("APPROVED", "already approved")],
)
@pytest.mark.parametrize(("actor", "is_admin"), [(ALICE, False), (BOB, False), (CAROL, True)])
def test_may_request_refuses_while_pending_or_once_approved(
    latest: str, words: str, actor: str, is_admin: bool
) -> None:
    r = refusal(may_request, latest, BENCHMARK, MODEL, actor, is_admin=is_admin)
    assert r.code == "conflict"
    assert words in r.reason


@pytest.mark.parametrize("latest", [None, "REJECTED"])  # new, or again after a rejection
@pytest.mark.parametrize("component", [MODEL, DATASET])
@pytest.mark.parametrize(("actor", "is_admin"), [(ALICE, False), (BOB, False), (CAROL, True), (ALICE, True)])
def test_may_request_allows_either_side_and_admins_when_nothing_is_open(
    latest: str | None, component: ComponentFacts, actor: str, is_admin: bool
) -> None:
    assert may_request(latest, BENCHMARK, component, actor, is_admin=is_admin) is None


# --- auto_approval: the whole decision table ---------------------------------------------------


def auto(
    *,
    benchmark_owner: str = ALICE,
    component_owner: str = BOB,
    initiator: str = BOB,
    mode: str = "NEVER",
    allowlist: tuple[str, ...] = (),
    passed: bool | None = True,
    kind: str = "model",
) -> tuple[bool, str]:
    return auto_approval(
        kind=kind,
        benchmark_owner=benchmark_owner,
        component_owner=component_owner,
        initiator=initiator,
        mode=mode,
        allowlist=allowlist,
        compatibility_passed=passed,
    )


@pytest.mark.parametrize(
    ("case", "expected", "words"),
    [
        # 1. same owner on both sides, whoever initiates and whatever the policy
        ({"component_owner": ALICE, "initiator": ALICE}, True, "benchmark owner also owns this model"),
        ({"component_owner": ALICE, "initiator": CAROL}, True, "also owns"),  # an admin asked
        ({"component_owner": ALICE, "initiator": ALICE, "mode": "ALLOWLIST"}, True, "also owns"),
        # 2. the benchmark owner asked: the component owner must consent, whatever the policy
        ({"initiator": ALICE}, False, "benchmark owner asked, so the model's owner must approve"),
        ({"initiator": ALICE, "mode": "ALWAYS"}, False, "model's owner must approve"),
        ({"initiator": ALICE, "mode": "ALLOWLIST", "allowlist": (BOB,)}, False, "model's owner must approve"),
        # 3. ALWAYS
        ({"mode": "ALWAYS"}, True, "approves every model automatically (ALWAYS)"),
        ({"mode": "ALWAYS", "initiator": CAROL}, True, "ALWAYS"),  # an admin asked for bob
        ({"mode": "ALWAYS", "kind": "dataset"}, True, "every dataset"),
        # 4. ALLOWLIST: the component owner must be on it
        ({"mode": "ALLOWLIST", "allowlist": (CAROL, BOB)}, True, "bob is on the benchmark's model allowlist"),
        ({"mode": "ALLOWLIST", "allowlist": (CAROL,)}, False, "no allowlist match"),
        ({"mode": "ALLOWLIST", "allowlist": ()}, False, "no allowlist match"),
        ({"mode": "ALLOWLIST", "allowlist": (BOB,), "initiator": CAROL}, True, "allowlist"),
        # 5. otherwise a person decides
        ({}, False, "auto-approval is NEVER, so the benchmark owner or an admin must approve"),
        ({"mode": "NEVER", "allowlist": (BOB,)}, False, "NEVER"),  # a list means nothing under NEVER
    ],
)
def test_auto_approval_rules_in_medperf_order(case: dict, expected: bool, words: str) -> None:
    approve, why = auto(**case)
    assert approve is expected
    assert words in why


@pytest.mark.parametrize(
    "case",
    [
        {"component_owner": ALICE, "initiator": ALICE},
        {"mode": "ALWAYS"},
        {"mode": "ALLOWLIST", "allowlist": (BOB,)},
    ],
)
def test_auto_approval_waits_for_a_passed_test(case: dict) -> None:
    approve, why = auto(**case, passed=None)
    assert approve is False
    assert "approved automatically once a compatibility test passes" in why
    approve, why = auto(**case, passed=True)
    assert approve is True
    assert why.endswith(", and the compatibility test passed")


@pytest.mark.parametrize(
    "case",
    [
        {"component_owner": ALICE, "initiator": ALICE},
        {"mode": "ALWAYS"},
        {"mode": "ALLOWLIST", "allowlist": (BOB,)},
        {"initiator": ALICE},
        {},
    ],
)
def test_a_failed_test_never_auto_approves(case: dict) -> None:
    assert auto(**case, passed=False) == (False, "the compatibility test failed, so a person must decide")


@pytest.mark.parametrize(
    ("benchmark_owner", "component_owner", "mode", "expected"),
    [
        (ALICE, ALICE, "NEVER", "auto-approval (same owner)"),
        (ALICE, BOB, "ALWAYS", "auto-approval (ALWAYS)"),
        (ALICE, BOB, "ALLOWLIST", "auto-approval (ALLOWLIST)"),
    ],
)
def test_auto_approver_names_the_rule(benchmark_owner: str, component_owner: str, mode: str, expected: str) -> None:
    assert auto_approver(benchmark_owner, component_owner, mode) == expected


# --- decide_association ------------------------------------------------------------------------


def decide(
    *,
    latest: str | None = "PENDING",
    initiator: str = BOB,
    actor: str = ALICE,
    benchmark: BenchmarkFacts = BENCHMARK,
    component: ComponentFacts = MODEL,
    is_admin: bool = False,
    approve: bool = True,
    passed: bool | None = True,
) -> str:
    return decide_association(latest, initiator, actor, benchmark, component, is_admin, approve, passed)


@pytest.mark.parametrize(("latest", "shown"), [(None, "not requested"), ("REJECTED", "REJECTED")])
@pytest.mark.parametrize("approve", [True, False])
def test_decide_association_needs_a_pending_or_approved_entry(latest: str | None, shown: str, approve: bool) -> None:
    r = refusal(decide, latest=latest, approve=approve, is_admin=True)
    assert r.code == "conflict"
    assert "no pending request" in r.reason
    assert f"(the association is {shown})" in r.reason


def test_approving_an_approved_association_is_a_conflict() -> None:
    r = refusal(decide, latest="APPROVED", is_admin=True)
    assert r.code == "conflict"
    assert "already approved" in r.reason and "reject it" in r.reason


@pytest.mark.parametrize(
    ("actor", "is_admin"),
    [(ALICE, False), (BOB, False), (CAROL, True)],  # benchmark owner, component owner, admin
)
@pytest.mark.parametrize("passed", [None, False, True])
def test_an_approval_may_be_revoked_by_either_side_or_an_admin(actor: str, is_admin: bool, passed: bool) -> None:
    assert decide(latest="APPROVED", actor=actor, is_admin=is_admin, approve=False, passed=passed) == "REJECTED"


def test_a_revocation_does_not_need_the_benchmark_to_stay_approved() -> None:
    rejected = replace(BENCHMARK, status="REJECTED", deleted=True)
    assert decide(latest="APPROVED", benchmark=rejected, approve=False) == "REJECTED"


@pytest.mark.parametrize("latest", [None, "PENDING", "APPROVED", "REJECTED"])
@pytest.mark.parametrize("approve", [True, False])
def test_decide_association_refuses_a_stranger_whatever_the_state(latest: str | None, approve: bool) -> None:
    r = refusal(decide, latest=latest, actor=CAROL, approve=approve)
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


@pytest.mark.parametrize(("passed", "words"), [(None, "has not reported yet"), (False, "failed")])
def test_approval_requires_a_passed_compatibility_test(passed: bool | None, words: str) -> None:
    r = refusal(decide, passed=passed)
    assert r.code == "conflict"
    assert f"the compatibility test {words}" in r.reason
    assert "approve once it has passed" in r.reason


@pytest.mark.parametrize("passed", [None, False, True])
def test_rejection_does_not_depend_on_the_compatibility_test(passed: bool | None) -> None:
    assert decide(approve=False, passed=passed) == "REJECTED"


@pytest.mark.parametrize(
    ("benchmark", "component", "words"),
    [
        (replace(BENCHMARK, status="REJECTED"), MODEL, "the benchmark is REJECTED"),
        (BENCHMARK, replace(MODEL, is_valid=False), "marked invalid"),
        (BENCHMARK, replace(MODEL, deleted=True), "was deleted"),
    ],
)
def test_approval_rechecks_that_both_sides_can_still_join(
    benchmark: BenchmarkFacts, component: ComponentFacts, words: str
) -> None:
    assert words in refusal(decide, benchmark=benchmark, component=component).reason
    assert decide(benchmark=benchmark, component=component, approve=False) == "REJECTED"


def test_admin_needs_a_passed_test_too() -> None:
    r = refusal(decide, actor=CAROL, is_admin=True, passed=False)
    assert r.code == "conflict"


@pytest.mark.parametrize(("initiator", "actor"), [(CAROL, CAROL), (ALICE, ALICE)])
def test_admin_may_approve_a_request_they_initiated(initiator: str, actor: str) -> None:
    assert decide(initiator=initiator, actor=actor, is_admin=True) == "APPROVED"


def test_admin_stranger_may_decide() -> None:
    assert decide(actor=CAROL, is_admin=True) == "APPROVED"
    assert decide(actor=CAROL, is_admin=True, approve=False) == "REJECTED"


@pytest.mark.parametrize(
    ("previous", "status", "action"),
    [
        (None, "PENDING", "requested"),
        ("REJECTED", "PENDING", "re-requested"),
        ("PENDING", "APPROVED", "approved"),
        ("PENDING", "REJECTED", "rejected"),
        ("APPROVED", "REJECTED", "revoked"),
    ],
)
def test_association_action(previous: str | None, status: str, action: str) -> None:
    assert association_action(previous, status) == action


# --- list_visibility -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "is_admin", "benchmark"),
    [(CAROL, True, BENCHMARK), (CAROL, True, None), (ALICE, False, BENCHMARK)],
)
def test_admins_and_the_benchmark_owner_list_everything(
    actor: str, is_admin: bool, benchmark: BenchmarkFacts | None
) -> None:
    assert list_visibility(actor, is_admin, benchmark, [], benchmark.id if benchmark else None) is None


@pytest.mark.parametrize(
    ("own", "models_in", "datasets_in"),
    [
        ([], set(), set()),
        ([(1, "dataset", "APPROVED")], {1}, set()),  # an approved data owner sees the benchmark's models
        ([(1, "model", "APPROVED"), (2, "model", "PENDING")], set(), {1}),  # an approved model owner: datasets
        ([(1, "dataset", "PENDING"), (2, "dataset", "REJECTED")], set(), set()),  # only their own rows
    ],
)
def test_others_see_their_own_rows_and_medperfs_cross_lists(
    own: list[tuple[int, str, str]], models_in: set[int], datasets_in: set[int]
) -> None:
    assert list_visibility(BOB, False, None, own) == Visibility(frozenset(models_in), frozenset(datasets_in))


@pytest.mark.parametrize("own", [[], [(2, "dataset", "APPROVED")]])
def test_listing_a_benchmark_one_has_nothing_to_do_with_is_refused(own: list[tuple[int, str, str]]) -> None:
    r = refusal(list_visibility, CAROL, False, BENCHMARK, own, BENCHMARK.id)
    assert r.code == "forbidden"
    assert "owner of benchmark 1" in r.reason


def test_any_request_of_ones_own_opens_the_benchmarks_list() -> None:
    visible = list_visibility(BOB, False, BENCHMARK, [(1, "model", "REJECTED")], BENCHMARK.id)
    assert visible == Visibility(frozenset(), frozenset())


# --- trail_scope ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "actor", "is_admin", "owned", "expected"),
    [
        ("benchmark", ALICE, False, (), None),  # the benchmark owner sees it all
        ("benchmark", CAROL, True, (), None),
        ("model", BOB, False, (), None),  # the component owner sees it all
        ("dataset", CAROL, True, (), None),
        ("model", ALICE, False, (1, 4), frozenset({1, 4})),  # a benchmark owner: their benchmarks only
    ],
)
def test_trail_scope(entity: str, actor: str, is_admin: bool, owned: tuple, expected: frozenset | None) -> None:
    assert trail_scope(entity, actor, is_admin, BOB if entity != "benchmark" else ALICE, owned) == expected


@pytest.mark.parametrize(
    ("entity", "owner", "owned"),
    [("benchmark", ALICE, ()), ("benchmark", ALICE, (1,)), ("model", BOB, ()), ("dataset", BOB, ())],
)
def test_trail_scope_refuses_others(entity: str, owner: str, owned: tuple) -> None:
    r = refusal(trail_scope, entity, CAROL, False, owner, owned)
    assert r.code == "forbidden"
    assert "audit trail" in r.reason


# --- apply_edit (the projection of registry edits) ----------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("entity", "changes", "updates"),
    [
        ("dataset", {"state": "OPERATION", "name": "x", "user_metadata": {}}, {"state": "OPERATION"}),
        ("model", {"is_valid": False}, {"is_valid": False}),
        ("model", {"data_preparator_id": 3}, {}),  # a model has no preparator to track
        ("dataset", {"data_preparator_id": 3}, {"data_preparator_id": 3}),
        ("benchmark", {"name": "b2", "is_valid": False}, {"name": "b2", "is_valid": False}),
        ("dataset", {"deleted": True}, {"deleted": True}),
        ("container", {"state": "OPERATION"}, {}),  # approvals does not project containers
    ],
)
def test_apply_edit_keeps_only_tracked_fields(entity: str, changes: dict, updates: dict) -> None:
    got, versions = apply_edit(entity, changes, T0, {})
    assert got == updates
    assert versions == {field: T0.isoformat() for field in updates}


def test_apply_edit_ignores_an_older_edit_of_the_same_field() -> None:
    _, versions = apply_edit("model", {"is_valid": False}, T0, {})
    late, versions = apply_edit("model", {"is_valid": True, "state": "OPERATION"}, T0 - timedelta(seconds=1), versions)
    assert late == {"state": "OPERATION"}  # is_valid keeps the newer value; state was never edited
    newer, _ = apply_edit("model", {"is_valid": True}, T0 + timedelta(seconds=1), versions)
    assert newer == {"is_valid": True}


@pytest.mark.parametrize(
    ("entity", "changes"),
    [
        ("dataset", {"state": "RETIRED"}),
        ("model", {"is_valid": "no"}),
        ("dataset", {"data_preparator_id": "7"}),
        ("benchmark", {"name": ""}),
    ],
)
def test_apply_edit_refuses_impossible_values(entity: str, changes: dict) -> None:
    with pytest.raises(ValueError, match="not a possible value"):
        apply_edit(entity, changes, T0, {})


def test_every_projected_entity_tracks_state_validity_and_deletion() -> None:
    for fields in TRACKED.values():
        assert {"state", "is_valid", "deleted"} <= fields


@pytest.mark.parametrize(
    ("status", "is_valid", "deleted", "stranger_sees"),
    [
        ("PENDING", True, False, False),
        ("REJECTED", True, False, False),
        ("APPROVED", True, False, True),
        ("APPROVED", False, False, False),
        ("APPROVED", True, True, False),
    ],
)
def test_who_sees_a_benchmark_follows_the_registry(
    status: str, is_valid: bool, deleted: bool, stranger_sees: bool
) -> None:
    facts = BenchmarkFacts(id=1, owner="committee", status=status, is_valid=is_valid, deleted=deleted)
    assert may_see_benchmark(facts, "stranger", False) is stranger_sees
    assert may_see_benchmark(facts, "committee", False) and may_see_benchmark(facts, "admin", True)


def test_an_invalidated_component_is_seen_by_its_owner_and_admins_only() -> None:
    hidden = ComponentFacts(kind="model", id=3, owner="bob", is_valid=False)
    assert not may_see_component(hidden, "carol", False)
    assert may_see_component(hidden, "bob", False) and may_see_component(hidden, "admin", True)
    assert may_see_component(replace(hidden, is_valid=True), "carol", False)
