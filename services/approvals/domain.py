"""Approval rules, free of I/O. Each function answers one question and says why when it refuses.

The rules follow MedPerf (``server/utils/associations.py`` and the benchmark serializers): a
benchmark needs an admin (or the auto-approve list); an association needs an approved benchmark,
an operational component and the consent of the side that did not ask, unless the benchmark's
auto-approval policy gives it in advance; history is append-only, so every decision stays visible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

AUTO_APPROVE_LIST = "auto-approve list"


class Refusal(Exception):
    """A decision the rules forbid; the message tells the user what would make it allowed."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class BenchmarkFacts:
    """What approvals knows about a benchmark (its projection of the registry's facts)."""

    id: int
    owner: str
    status: str = "APPROVED"
    data_preparator_id: int = 0
    is_valid: bool = True
    deleted: bool = False


@dataclass(frozen=True)
class ComponentFacts:
    """What approvals knows about a dataset or model."""

    kind: str
    id: int
    owner: str
    state: str = "OPERATION"
    is_valid: bool = True
    deleted: bool = False
    data_preparator_id: int | None = None


# --- benchmarks -------------------------------------------------------------------------------


def decide_benchmark(status: str, actor_is_admin: bool, approve: bool) -> str:
    """The benchmark's next status, or a refusal. PENDING -> APPROVED | REJECTED, APPROVED ->
    REJECTED; REJECTED is final and nothing goes back to PENDING."""
    if not actor_is_admin:
        raise Refusal("forbidden", "only an admin may approve or reject a benchmark")
    if status == "REJECTED":
        raise Refusal("conflict", "this benchmark was rejected; a rejected benchmark cannot be approved or re-decided")
    if status == "APPROVED" and approve:
        raise Refusal("conflict", "this benchmark is already approved")
    return "APPROVED" if approve else "REJECTED"


def benchmark_auto_approved(owner: str, auto_approve_from: Iterable[str]) -> bool:
    """MedPerf's AUTO_APPROVE_BENCHMARKS_FROM: trusted submitters skip the admin's review."""
    return owner in set(auto_approve_from)


def may_configure(actor: str, benchmark: BenchmarkFacts, is_admin: bool, what: str) -> None:
    """Auto-approval policy and priorities belong to the benchmark owner (and admins)."""
    if actor != benchmark.owner and not is_admin:
        raise Refusal("forbidden", f"only the owner of benchmark {benchmark.id} or an admin may set {what}")


def normalise_allowlist(users: Iterable[str]) -> list[str]:
    """Trimmed, without duplicates, in the order given; a blank name is a mistake worth reporting."""
    seen: list[str] = []
    for user in users:
        name = user.strip()
        if not name:
            raise Refusal("invalid", "allowlist: user names must not be blank")
        if name not in seen:
            seen.append(name)
    return seen


# --- associations: who may ask, and when --------------------------------------------------------


def is_party(actor: str, benchmark: BenchmarkFacts, component: ComponentFacts, is_admin: bool) -> bool:
    return is_admin or actor in (benchmark.owner, component.owner)


def check_joinable(benchmark: BenchmarkFacts, component: ComponentFacts) -> None:
    """Could ``component`` join ``benchmark`` now? Checked on request and again on approval, since
    either side may have been rejected, invalidated or deleted since the request."""
    what = f"{component.kind} {component.id}"
    if benchmark.deleted:
        raise Refusal("not_found", f"benchmark {benchmark.id} was deleted")
    if benchmark.status != "APPROVED":
        raise Refusal("conflict", f"the benchmark is {benchmark.status}; associations open once an admin approves it")
    if not benchmark.is_valid:
        raise Refusal("conflict", f"benchmark {benchmark.id} was marked invalid; it takes no new associations")
    if component.deleted:
        raise Refusal("not_found", f"{what} was deleted")
    if not component.is_valid:
        raise Refusal("conflict", f"{what} was marked invalid; only a valid {component.kind} may join a benchmark")
    if component.state != "OPERATION":
        raise Refusal(
            "conflict",
            f"{what} is in {component.state}; mark it OPERATION (edit its state) before it joins a benchmark",
        )
    if component.kind == "dataset" and component.data_preparator_id != benchmark.data_preparator_id:
        raise Refusal(
            "invalid",
            f"{what} was prepared with container {component.data_preparator_id}, but the benchmark needs its "
            f"data preparator {benchmark.data_preparator_id}; prepare the data with it",
        )


def may_request(
    latest_status: str | None, benchmark: BenchmarkFacts, component: ComponentFacts, actor: str, is_admin: bool
) -> None:
    """Either side (or an admin) may ask; a new request needs no history, or a rejected one."""
    if not is_party(actor, benchmark, component, is_admin):
        raise Refusal("forbidden", "only the benchmark owner or the component's owner may request this association")
    check_joinable(benchmark, component)
    if latest_status == "PENDING":
        raise Refusal("conflict", "a request for this association is already pending a decision")
    if latest_status == "APPROVED":
        raise Refusal("conflict", "this association is already approved")


class AutoApproval(NamedTuple):
    approve: bool
    why: str


def auto_approval(
    *,
    kind: str,
    benchmark_owner: str,
    component_owner: str,
    initiator: str,
    mode: str,
    allowlist: Iterable[str],
    compatibility_passed: bool | None,
) -> AutoApproval:
    """Whether a request is approved without a person deciding, in MedPerf's order:

    1. the component owner is the benchmark owner: nobody else's consent is needed;
    2. the benchmark owner initiated: the component's owner must consent, whatever the policy;
    3. the benchmark's policy for ``kind`` is ALWAYS;
    4. it is ALLOWLIST and the component owner is on the list;
    5. otherwise a person decides.

    Unlike MedPerf, a rule that applies still waits for a passed compatibility test (a failed one
    always goes to a person): approving untested work would let it run at every site.
    """
    if compatibility_passed is False:
        return AutoApproval(False, "the compatibility test failed, so a person must decide")
    if component_owner == benchmark_owner:
        basis = f"the benchmark owner also owns this {kind}"
    elif initiator == benchmark_owner:
        return AutoApproval(False, f"the benchmark owner asked, so the {kind}'s owner must approve it")
    elif mode == "ALWAYS":
        basis = f"the benchmark approves every {kind} automatically (ALWAYS)"
    elif mode == "ALLOWLIST" and component_owner in set(allowlist):
        basis = f"{component_owner} is on the benchmark's {kind} allowlist"
    else:
        policy = "no allowlist match" if mode == "ALLOWLIST" else f"auto-approval is {mode}"
        return AutoApproval(False, f"{policy}, so the benchmark owner or an admin must approve it")
    if compatibility_passed is None:
        return AutoApproval(False, f"{basis}; it is approved automatically once a compatibility test passes")
    return AutoApproval(True, f"{basis}, and the compatibility test passed")


def auto_approver(benchmark_owner: str, component_owner: str, mode: str) -> str:
    """The ``decided_by`` of an automatic approval: which rule gave the consent."""
    return "auto-approval (same owner)" if benchmark_owner == component_owner else f"auto-approval ({mode})"


def decide_association(
    latest_status: str | None,
    initiator: str,
    actor: str,
    benchmark: BenchmarkFacts,
    component: ComponentFacts,
    is_admin: bool,
    approve: bool,
    compatibility_passed: bool | None,
) -> str:
    """The next status: a pending request is approved or rejected; an approved one may be revoked
    (a new REJECTED entry), which is how a party withdraws consent."""
    if not is_party(actor, benchmark, component, is_admin):
        raise Refusal(
            "forbidden", "only the benchmark owner, the component's owner or an admin may decide this association"
        )
    if latest_status == "APPROVED":
        if approve:
            raise Refusal("conflict", "this association is already approved (to withdraw it, reject it)")
        return "REJECTED"
    if latest_status != "PENDING":
        raise Refusal(
            "conflict", f"there is no pending request to decide (the association is {latest_status or 'not requested'})"
        )
    if not approve:
        return "REJECTED"  # the initiator may withdraw, and a failed test is no obstacle to saying no
    if actor == initiator and not is_admin:
        raise Refusal("forbidden", "you initiated this request; the other party must approve it")
    if compatibility_passed is not True:
        state = "has not reported yet" if compatibility_passed is None else "failed"
        raise Refusal("conflict", f"the compatibility test {state}; approve once it has passed")
    check_joinable(benchmark, component)
    return "APPROVED"


def association_action(previous_status: str | None, status: str) -> str:
    """How an audit trail names an entry of the history, from the entry before it."""
    if status == "PENDING":
        return "requested" if previous_status is None else "re-requested"
    if status == "APPROVED":
        return "approved"
    return "revoked" if previous_status == "APPROVED" else "rejected"


# --- who may read what ----------------------------------------------------------------------------


def may_see_benchmark(benchmark: BenchmarkFacts, actor: str, is_admin: bool) -> bool:
    """The registry's rule (``registry.domain.may_see``): its owner and admins always; everyone
    else once it is approved, while it is valid and not deleted. What a caller may not see is
    answered as if it did not exist (404 with the same words), never 403."""
    if is_admin or actor == benchmark.owner:
        return True
    return benchmark.status == "APPROVED" and benchmark.is_valid and not benchmark.deleted


def may_see_component(component: ComponentFacts, actor: str, is_admin: bool) -> bool:
    """A dataset or model: its owner and admins always; everyone else while it is valid."""
    return is_admin or actor == component.owner or (component.is_valid and not component.deleted)


def not_found(entity: str, entity_id: int) -> Refusal:
    """The one answer for "no such thing" and "not yours to see": the registry's words for a
    missing entity, so that nothing tells the two apart."""
    return Refusal("not_found", f"no {entity} {entity_id}")


@dataclass(frozen=True)
class Visibility:
    """Associations a caller may list beyond those of the benchmarks and components they own."""

    models_in: frozenset[int]  # benchmarks where the caller has an approved dataset
    datasets_in: frozenset[int]  # benchmarks where the caller has an approved model


def list_visibility(
    actor: str,
    is_admin: bool,
    benchmark: BenchmarkFacts | None,
    own_entries: Iterable[tuple[int, str, str]],
    benchmark_id: int | None = None,
) -> Visibility | None:
    """What ``actor`` may list; None means everything. MedPerf's rule: a benchmark's model list is
    for admins, its owner and the owners of its approved datasets; its dataset list for admins, its
    owner and the owners of its approved models; everyone sees their own components' associations.
    ``own_entries`` are (benchmark id, kind, latest status) of the caller's components; asking for
    one benchmark (``benchmark_id``) without any relation to it is refused."""
    if is_admin or (benchmark is not None and benchmark.owner == actor):
        return None
    own = list(own_entries)
    if benchmark_id is not None and not any(b == benchmark_id for b, _, _ in own):
        raise Refusal(
            "forbidden",
            f"only admins, the owner of benchmark {benchmark_id} and the owners of the datasets and models "
            "that asked to join it may list its associations",
        )
    approved = {(b, kind) for b, kind, status in own if status == "APPROVED"}
    return Visibility(
        models_in=frozenset(b for b, kind in approved if kind == "dataset"),
        datasets_in=frozenset(b for b, kind in approved if kind == "model"),
    )


# --- audit trail --------------------------------------------------------------------------------


def trail_scope(
    entity: str, actor: str, is_admin: bool, owner: str, owned_benchmarks: Iterable[int] = ()
) -> frozenset[int] | None:
    """Which part of an audit trail ``actor`` may read: all of it (None), only the entries about
    the given benchmarks (the owner of a benchmark a component joined sees that side of its
    history, no more), or nothing (a refusal)."""
    if is_admin or actor == owner:
        return None
    owned = frozenset(owned_benchmarks)
    if entity != "benchmark" and owned:
        return owned
    who = "the benchmark owner" if entity == "benchmark" else f"the {entity}'s owner, benchmark owners"
    raise Refusal("forbidden", f"only {who} and admins may read this {entity}'s audit trail")


# --- projections of registry facts ---------------------------------------------------------------

#: Fields of each entity that approvals keeps; ``deleted`` is set by an EntityDeleted.
TRACKED: dict[str, frozenset[str]] = {
    "benchmark": frozenset({"name", "data_preparator_id", "state", "is_valid", "deleted"}),
    "dataset": frozenset({"data_preparator_id", "state", "is_valid", "deleted"}),
    "model": frozenset({"state", "is_valid", "deleted"}),
}
_CHECKS: dict[str, Any] = {
    "state": lambda v: v in ("DEVELOPMENT", "OPERATION"),
    "is_valid": lambda v: isinstance(v, bool),
    "deleted": lambda v: isinstance(v, bool),
    "data_preparator_id": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "name": lambda v: isinstance(v, str) and bool(v),
}


def apply_edit(
    entity: str, changes: Mapping[str, Any], at: datetime, versions: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The projected fields to set from an edit made at ``at``, and the new per-field versions.

    Each consumer has its own delivery order, and a retried edit can arrive after a later one: a
    field takes a value only from an edit newer than the one it last took a value from. Untracked
    fields are ignored; a tracked field with an impossible value is an error (``ValueError``).
    """
    updates: dict[str, Any] = {}
    new_versions = dict(versions)
    for field, value in changes.items():
        if field not in TRACKED.get(entity, frozenset()):
            continue
        if not _CHECKS[field](value):
            raise ValueError(f"{entity} edit: {field}={value!r} is not a possible value")
        seen = versions.get(field)
        if seen is not None and datetime.fromisoformat(seen) >= at:
            continue
        updates[field] = value
        new_versions[field] = at.isoformat()
    return updates, new_versions
