"""A user's own signing key, as `medperf test run --submit` keeps one: registered at the user's own
site (``ws-<user>``) through ``POST /sites/{site}/keys``, and used to sign the compatibility reports
that tests attach to association requests (approvals counts no unsigned report)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shared.events import CompatibilityReport
from shared.signing import SiteKey

Post = Callable[[str, dict[str, Any]], Awaitable[Any]]


class Workstation:
    def __init__(self, user: str) -> None:
        self.user, self.site, self.key = user, f"ws-{user}", SiteKey.generate()
        self.registered = False

    async def report(
        self,
        post: Post,
        benchmark_id: int,
        kind: str,
        component_id: int,
        passed: bool = True,
        metrics: dict[str, float] | None = None,
        detail: str = "ran on the demo data",
    ) -> dict[str, Any]:
        """A signed report of this association as a request body's ``compatibility``; ``post(path,
        body)`` registers the key as this user on first use."""
        if not self.registered:
            await post(f"/sites/{self.site}/keys", {"public_key": self.key.public_key})
            self.registered = True
        report = CompatibilityReport(
            passed=passed,
            metrics=metrics if metrics is not None else {"auc": 0.9},
            detail=detail,
            benchmark_id=benchmark_id,
            kind=kind,  # type: ignore[arg-type]
            component_id=component_id,
        )
        return self.key.sign_report(report, self.site).model_dump(mode="json")
