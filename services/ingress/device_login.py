"""Sign-in to the web app through the federation's OpenID Connect issuer with the device grant
(RFC 8628), as ``medperf auth login`` does: the ingress asks the issuer for a code on the page's
behalf (so the issuer need not allow calls from other origins), the person approves the code at
the issuer, and the page asks here until the issuer grants the access token. The page then sends
that token as its bearer token, checked like every other (services/ingress/jwks.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from services.ingress.gateway import Refused
from services.ingress.jwks import fetch
from shared.settings import Settings

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
MAX_ANSWER = 64 * 1024  # an issuer's answer is a few hundred bytes; a larger one is not read


class DeviceLogin:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._endpoints: dict[str, str] | None = None

    @property
    def issuer(self) -> str:
        if not self.settings.oidc_issuer:
            raise Refused(404, "this federation has no identity provider: sign in with an API token")
        return self.settings.oidc_issuer.rstrip("/")

    async def start(self) -> dict[str, Any]:
        """A new code for the person to approve at the issuer, and where."""
        endpoints = await self._discover()
        request = {"client_id": self.settings.oidc_client_id, "scope": "openid email"}
        if self.settings.oidc_audience:
            request["audience"] = self.settings.oidc_audience
        answer = await self._post(endpoints["device_authorization_endpoint"], request)
        if "device_code" not in answer or "user_code" not in answer:
            raise Refused(502, f"the identity provider refused a sign-in code: {_reason(answer)}")
        keep = ("device_code", "user_code", "verification_uri", "verification_uri_complete", "interval", "expires_in")
        return {key: answer[key] for key in keep if key in answer}

    async def finish(self, device_code: str) -> dict[str, Any]:
        """The access token once the person approved; ``pending`` while they have not yet."""
        endpoints = await self._discover()
        grant = {"grant_type": DEVICE_GRANT, "device_code": device_code, "client_id": self.settings.oidc_client_id}
        answer = await self._post(endpoints["token_endpoint"], grant)
        if isinstance(answer.get("access_token"), str):
            return {"access_token": answer["access_token"]}
        if answer.get("error") in ("authorization_pending", "slow_down"):
            return {"pending": True, "slow_down": answer["error"] == "slow_down"}
        raise Refused(400, f"sign-in failed: {_reason(answer)}; start again")

    async def _discover(self) -> dict[str, str]:
        if self._endpoints is None:
            found = await self._get(f"{self.issuer}/.well-known/openid-configuration")
            if not found.get("device_authorization_endpoint") or not found.get("token_endpoint"):
                raise Refused(404, "the identity provider offers no device sign-in: sign in with an API token")
            self._endpoints = {k: str(found[k]) for k in ("device_authorization_endpoint", "token_endpoint")}
        return self._endpoints

    async def _get(self, url: str) -> dict[str, Any]:
        return await self._call("GET", url)

    async def _post(self, url: str, form: dict[str, str]) -> dict[str, Any]:
        return await self._call("POST", url, data=form)

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        deadline = self.settings.oidc_jwks_deadline
        try:
            async with asyncio.timeout(deadline):  # the whole exchange: a trickling issuer too
                _, body = await fetch(method, url, MAX_ANSWER, **kwargs)
            answer = json.loads(body)
        except (TimeoutError, httpx.HTTPError, ValueError) as exc:
            why = f"no complete answer within {deadline:g} s" if isinstance(exc, TimeoutError) else str(exc)[:200]
            raise Refused(503, f"the identity provider did not answer properly ({why}); try again shortly") from exc
        if not isinstance(answer, dict):
            raise Refused(502, "the identity provider's answer is not a JSON object")
        return answer


def _reason(answer: dict[str, Any]) -> str:
    error = str(answer.get("error") or "no reason given")[:200]
    detail = str(answer.get("error_description") or "")[:300]
    return f"{error} ({detail})" if detail else error
