"""The web app for every role, served as built files: the page at ``/app`` and its assets. Built
from ``web/`` (``npm run build`` there: esbuild over the pinned packages of package-lock.json)
into ``services/ingress/web/``, committed, so the ingress needs no Node.js and no CDN. The files
hold no data: the app asks for a token and calls the same API, under the same permission table."""

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.ingress.device_login import DeviceLogin
from services.ingress.gateway import ERRORS, Context, authorized

router = APIRouter(responses=ERRORS, tags=["web app"])
BUILT = Path(__file__).with_name("web")
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "app.js.LEGAL.txt": "text/plain"}
# Revalidated on every load (the ETag makes that cheap), so an upgraded ingress serves the new app at once.
FRESH = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


@router.get("/app", response_class=FileResponse, summary="the web app: a page per role (sign in with an API token)")
async def page(ctx: Context = Depends(authorized)) -> FileResponse:
    return FileResponse(BUILT / "index.html", media_type="text/html", headers=FRESH)


@router.get("/app/assets/{name}", response_class=FileResponse, summary="the web app's script, style and licences")
async def asset(
    name: Annotated[Literal["app.js", "app.css", "app.js.LEGAL.txt"], PathParam(description="a built file")],
    ctx: Context = Depends(authorized),
) -> FileResponse:
    return FileResponse(BUILT / name, media_type=ASSETS[name], headers=FRESH)


class DeviceCode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_code: str = Field(min_length=1, max_length=2048, description="as the sign-in's start gave it")


def _login(request: Request) -> DeviceLogin:
    settings = request.app.state.gateway.settings
    if getattr(request.app.state, "device_login", None) is None:
        request.app.state.device_login = DeviceLogin(settings)
    return request.app.state.device_login


@router.get("/app/sign-in", summary="how the web app signs in: with the identity provider, or API tokens only")
async def sign_in_options(request: Request, ctx: Context = Depends(authorized)) -> dict[str, str | None]:
    return {"oidc_issuer": request.app.state.gateway.settings.oidc_issuer}


@router.post(
    "/app/sign-in/device",
    summary="start a sign-in at the identity provider: a code for the person to approve there (RFC 8628)",
)
async def start_sign_in(request: Request, ctx: Context = Depends(authorized)) -> dict:
    return await _login(request).start()


@router.post(
    "/app/sign-in/token",
    summary="the access token once the person approved the code (202 while they have not)",
    responses={202: {"description": "not approved yet: ask again after the interval"}},
)
async def finish_sign_in(body: DeviceCode, request: Request, ctx: Context = Depends(authorized)) -> JSONResponse:
    answer = await _login(request).finish(body.device_code)
    return JSONResponse(
        answer, status_code=202 if answer.get("pending") else 200, headers={"Cache-Control": "no-store"}
    )
