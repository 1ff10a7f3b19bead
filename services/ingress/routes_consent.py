"""Routes for a data owner's consent given from the web: releasing results their site holds for
review, and a failed job's log tail. The registry says whether the caller owns the site (404 for
one they cannot see, 403 for one they do not own: admins and committees included, the consent is
the data owner's); the site's own agent then releases, as `medperf result release` and
`medperf job release-log` do at the site, and answers with what left (503 while it is offline)."""

# No ``from __future__ import annotations``: FastAPI reads the derived body model from the
# signature at import time.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from services.ingress.gateway import ERRORS, INT32_MAX, Context, authorized, body_of, fields_of
from shared.commands import CheckSiteOwner, ReleaseLog, ReleaseResults

router = APIRouter(responses=ERRORS, tags=["sites"])

SiteName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the site's name")]
JobId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the job's id at its site (GET /console/jobs)")]
Release = body_of(ReleaseResults, exclude=("site",), name="ResultRelease")


@router.post(
    "/sites/{site}/held-results/release",
    summary='let results the site holds leave it: {"job_ids": [...]} or {"all": true} (the site\'s data owner)',
)
async def release_results(site: SiteName, body: Release, ctx: Context = Depends(authorized)) -> Any:  # type: ignore[valid-type]
    command = ctx.command(ReleaseResults, site=site, **fields_of(body))  # a malformed body: 422 before anything
    await ctx.ask(CheckSiteOwner, site=site)
    return (await ctx.send(command)).data


@router.post(
    "/sites/{site}/jobs/{job_id}/log-release",
    summary="let a failed job's log tail leave its site, for those who see the job (the site's data owner)",
)
async def release_log(site: SiteName, job_id: JobId, ctx: Context = Depends(authorized)) -> Any:
    command = ctx.command(ReleaseLog, site=site, job_id=job_id)
    await ctx.ask(CheckSiteOwner, site=site)
    return (await ctx.send(command)).data
