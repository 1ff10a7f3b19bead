"""Routes for trust: sites' signing keys (the registry keeps them) and where a leaderboard entry
came from (the aggregator answers)."""

# No ``from __future__ import annotations``: FastAPI reads the derived body models from the
# signatures at import time.

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from services.ingress.gateway import ERRORS, INT32_MAX, Context, authorized, body_of, created, fields_of
from shared.commands import GetProvenance, ListSiteKeys, RegisterSiteKey, RevokeSiteKey

router = APIRouter(responses=ERRORS)

SiteName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the site's name")]
KeyId = Annotated[str, Path(min_length=1, max_length=64, description="the key's id (sha256 prefix of the key)")]
BenchmarkId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the benchmark's id")]
ModelId = Annotated[int, Path(ge=1, le=INT32_MAX, description="the model's id")]
NewKey = body_of(RegisterSiteKey, exclude=("site",), name="NewSiteKey")
Revocation = body_of(RevokeSiteKey, exclude=("site", "key_id"), name="SiteKeyRevocation")


@router.get("/sites/{site}/keys", tags=["sites"], summary="a site's signing keys, active and revoked")
async def site_keys(site: SiteName, ctx: Context = Depends(authorized)) -> Any:
    return (await ctx.ask(ListSiteKeys, site=site)).data


@router.post(
    "/sites/{site}/keys",
    status_code=201,
    tags=["sites"],
    summary="register a site's public signing key (the site's owner or an admin; its agent does it at start)",
)
async def register_site_key(site: SiteName, body: NewKey, ctx: Context = Depends(authorized)) -> Any:  # type: ignore[valid-type]
    return created(await ctx.ask(RegisterSiteKey, site=site, **fields_of(body)))


@router.post(
    "/sites/{site}/keys/{key_id}/revocation",
    tags=["sites"],
    summary="stop trusting a site's key: results it signs from now (or from compromised_since) are refused",
)
async def revoke_site_key(
    site: SiteName,
    key_id: KeyId,
    body: Revocation,  # type: ignore[valid-type]
    ctx: Context = Depends(authorized),
) -> Any:
    return (await ctx.ask(RevokeSiteKey, site=site, key_id=key_id, **fields_of(body))).data


@router.get(
    "/benchmarks/{benchmark_id}/models/{model_id}/provenance",
    tags=["results"],
    summary="where a model's results came from: per site, digests, dataset hash, signing key, approvals",
)
async def provenance(benchmark_id: BenchmarkId, model_id: ModelId, ctx: Context = Depends(authorized)) -> Any:
    return (await ctx.ask(GetProvenance, benchmark_id=benchmark_id, model_id=model_id)).data
