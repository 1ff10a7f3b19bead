"""Which compatibility reports count toward an approval (pure: no I/O).

A report counts only when it is signed (``shared.signing.canonical_report``) by a registered key
that was not revoked, and whose owner has standing to vouch for the test: the benchmark's
committee (its agent tests models on the demo data) or the owner of the component tested (a data
owner's site agent tests the reference model on the prepared data; a model owner runs
``medperf test run --submit``). The approvals service learns keys from the registry's events
(``SiteKeyRegistered``, ``SiteKeyRevoked``), as the aggregator does for results.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.approvals.domain import Refusal
from shared.events import CompatibilityReport
from shared.signing import BadKey, load_public_key, verify_report

HOW_TO_SIGN = (
    "a compatibility test counts only when signed by the benchmark committee's agent or by the owner of the "
    "component tested (a data owner's site agent; a model owner's `medperf test run --benchmark B --model M "
    "--submit`)"
)


@dataclass(frozen=True)
class SignerFacts:
    key_id: str
    site: str
    owner: str
    public_key: str
    revoked_at: datetime | None = None
    revoked_reason: str = ""


def check_report(
    report: CompatibilityReport,
    *,
    benchmark_id: int,
    kind: str,
    component_id: int,
    committee: str,
    component_owner: str,
    signer: SignerFacts | None,
) -> None:
    """Refuse (``Refusal``) a report that must not count, saying what is needed. A key not heard
    of yet is ``unavailable``: its registration travels on another stream and may still come."""
    if not report.signed:
        raise Refusal("invalid", f"this compatibility report is unsigned; {HOW_TO_SIGN}")
    tested = (report.benchmark_id, report.kind, report.component_id)
    if tested != (benchmark_id, kind, component_id):
        raise Refusal(
            "invalid",
            f"this report tested {report.kind} {report.component_id} for benchmark {report.benchmark_id}, "
            f"not {kind} {component_id} for benchmark {benchmark_id}; attach a test of this association",
        )
    if report.report_id is None or report.signed_at is None or report.site is None:
        raise Refusal("invalid", "a signed report names its report_id, site and signed_at")
    if signer is None:
        raise Refusal(
            "unavailable",
            f"signing key {report.key_id} is not known (yet): register it with POST /sites/{report.site}/keys "
            "(`medperf test run --submit` does); if you just did, retry shortly",
        )
    if signer.site != report.site:
        raise Refusal("forbidden", f"key {signer.key_id} belongs to site {signer.site!r}, not {report.site!r}")
    if signer.revoked_at is not None:
        why = f" ({signer.revoked_reason})" if signer.revoked_reason else ""
        raise Refusal(
            "forbidden",
            f"key {signer.key_id} of site {signer.site!r} was revoked at {signer.revoked_at.isoformat()}{why}; "
            "its reports no longer count: test again with a new key",
        )
    if signer.owner not in (committee, component_owner):
        raise Refusal(
            "forbidden",
            f"key {signer.key_id} belongs to {signer.owner}, who is neither the benchmark's committee ({committee}) "
            f"nor the owner of {kind} {component_id}; {HOW_TO_SIGN}",
        )
    try:
        ok = verify_report(load_public_key(signer.public_key), report)
    except BadKey:
        ok = False
    if not ok:
        raise Refusal(
            "invalid",
            f"bad signature on compatibility report {report.report_id} (key {report.key_id}): a field was changed "
            "after signing, or another key signed it",
        )


def summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the audit trail says a decision saw: which report, signed by which key, and its outcome."""
    if not report:
        return None
    return {"report_id": report.get("report_id"), "key_id": report.get("key_id"), "passed": report.get("passed")}


def counted_passed(report: dict[str, Any] | None) -> bool | None:
    """The outcome a stored report contributes: None when there is none, or it is unsigned (one
    stored before reports were signed: it never counts)."""
    if not report or not report.get("signature"):
        return None
    return bool(report.get("passed"))
