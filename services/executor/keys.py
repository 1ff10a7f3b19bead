"""The site's signing key at the agent: loaded (or created, on the first start) from the work
directory, and its public half registered with the site in the registry, as the site's owner.

Registering again at every start is a no-op for the registry. A refusal (the site belongs to
someone else, the key was revoked) stops the agent with the reason, since every result it signed
would be refused; an unreachable registry does not: results are signed anyway (the aggregator
retries them until the key's registration arrives), and the registration is retried here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from faststream.nats import NatsBroker
from nats.errors import NoRespondersError

from services.executor.settings import SiteSettings
from shared.commands import RegisterSiteKey
from shared.service import ask
from shared.signing import SiteKey

log = logging.getLogger("medperf.site.keys")

RETRY_SECONDS = 5.0


class SigningKeyRefused(RuntimeError):
    """The registry will not register this site's key; results signed with it would be refused."""


class KeyRegistration:
    def __init__(self, site: SiteSettings, broker: NatsBroker, request_timeout: float) -> None:
        self.site = site
        self.broker = broker
        self.request_timeout = request_timeout
        self._later: asyncio.Task[None] | None = None

    async def start(self) -> SiteKey:
        key = SiteKey.load_or_create(self.site.key_path)
        try:
            await self.register(key)
        except (TimeoutError, NoRespondersError, ConnectionError) as exc:
            log.warning("%s: registry unreachable (%s); will register key %s later", self.site.name, exc, key.key_id)
            self._later = asyncio.create_task(self._register_later(key), name=f"key-{self.site.name}")
        return key

    async def stop(self) -> None:
        if self._later is not None:
            self._later.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._later

    async def register(self, key: SiteKey) -> None:
        outcome = await ask(
            self.broker,
            RegisterSiteKey(actor=self.site.owner, site=self.site.name, public_key=key.public_key),
            self.request_timeout,
        )
        if not outcome.ok:
            raise SigningKeyRefused(
                f"the registry refused site {self.site.name}'s signing key {key.key_id} ({outcome.code}): "
                f"{outcome.reason}"
            )
        log.info("%s: signing key %s registered", self.site.name, key.key_id)

    async def _register_later(self, key: SiteKey) -> None:
        while True:
            await asyncio.sleep(RETRY_SECONDS)
            try:
                await self.register(key)
                return
            except SigningKeyRefused:
                log.exception("%s: its results will be refused until this is fixed", self.site.name)
                return
            except Exception as exc:  # still unreachable: keep trying
                log.info("%s: still cannot register key %s: %s", self.site.name, key.key_id, exc)
