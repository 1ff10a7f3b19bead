"""The site agent's own checks on consent given from afar (services/executor/consent.py): only its
configured data owner, only for this site, and never with remote release turned off; whatever the
ingress and the registry decided before."""

from __future__ import annotations

from pathlib import Path

from services.executor.consent import refusal
from services.executor.settings import SiteSettings
from shared.commands import ReleaseLog, ReleaseResults


def site(tmp_path: Path, **options: object) -> SiteSettings:
    return SiteSettings(name="site-a", owner="hospital-a", work_dir=tmp_path, **options)


def test_the_agent_acts_for_its_own_data_owner_only(tmp_path: Path) -> None:
    own = ReleaseResults(actor="hospital-a", site="site-a", all=True)
    assert refusal(site(tmp_path), own) is None
    claimed = ReleaseResults(actor="mallory", site="site-a", all=True)
    refused = refusal(site(tmp_path), claimed)
    assert refused is not None and refused.code == "forbidden" and "(hospital-a) only" in (refused.reason or "")
    admin = ReleaseLog(actor="root", is_admin=True, site="site-a", job_id=3)
    assert refusal(site(tmp_path), admin) is not None  # consent is the data owner's, not an admin's


def test_a_command_for_another_site_or_with_remote_release_off_is_refused(tmp_path: Path) -> None:
    elsewhere = refusal(site(tmp_path), ReleaseLog(actor="hospital-a", site="site-b", job_id=3))
    assert elsewhere is not None and elsewhere.code == "not_found"
    off = refusal(site(tmp_path, remote_release=False), ReleaseLog(actor="hospital-a", site="site-a", job_id=3))
    assert off is not None and "MEDPERF_SITE_REMOTE_RELEASE=false" in (off.reason or "")
    assert "medperf job release-log" in (off.reason or "")
