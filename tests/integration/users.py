"""The central services and the ingress in this process, and an HTTP client per user."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.settings import Settings


def central_settings(state_dir: Path, tokens: dict[str, str], **options: Any) -> Settings:
    """The central services' settings for a test: an HTTP port of the system's choosing, "admin"
    the admin, and ``tokens`` (user -> API token) accepted; ``options``: more settings."""
    return Settings(
        state_dir=state_dir,
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): user for user, t in tokens.items()},
        **options,
    )


@contextlib.asynccontextmanager
async def stack_with_users(
    state_dir: Path, nats_url: str, tokens: dict[str, str], **options: Any
) -> AsyncIterator[tuple[Stack, dict[str, httpx.AsyncClient]]]:
    """``tokens`` maps each user to a bootstrap API token ("admin" is the admin); the clients add
    "anonymous", who sends none. ``options``: more settings."""
    settings = central_settings(state_dir, tokens, nats_url=nats_url, **options)
    async with Stack(settings) as stack:
        assert stack.ingress is not None
        url = stack.ingress.url
        clients = {
            u: httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {t}"}) for u, t in tokens.items()
        }
        clients["anonymous"] = httpx.AsyncClient(base_url=url)
        try:
            yield stack, clients
        finally:
            for client in clients.values():
                await client.aclose()
