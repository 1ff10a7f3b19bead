"""Start the federation's processes in this one: the broker (embedded unless a URL is given),
the central services, the HTTP ingress, and any site agents."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from services.aggregator.app import create_service as create_aggregator
from services.approvals.app import create_service as create_approvals
from services.console.app import create_service as create_console
from services.executor.app import create_agent
from services.executor.runtime import ContainerRuntime
from services.executor.settings import SiteSettings
from services.ingress.app import Ingress
from services.registry.app import create_service as create_registry
from shared.broker import EmbeddedNats
from shared.service import ServiceHost
from shared.settings import Settings

log = logging.getLogger("medperf.stack")

CENTRAL = {
    "registry": create_registry,
    "approvals": create_approvals,
    "aggregator": create_aggregator,
    "console": create_console,
}


@dataclass
class Stack:
    settings: Settings
    services: tuple[str, ...] = ("registry", "approvals", "aggregator", "console", "ingress")
    sites: list[SiteSettings] = field(default_factory=list)
    runtime: ContainerRuntime | None = None
    hosts: dict[str, ServiceHost] = field(default_factory=dict)
    ingress: Ingress | None = None
    _exit: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def __aenter__(self) -> Stack:
        try:
            if not self.settings.nats_url:
                broker = EmbeddedNats(self.settings.state_dir.resolve() / "nats")
                url = broker.start()
                self._exit.callback(broker.stop)
                self.settings = self.settings.model_copy(update={"nats_url": url})
                log.info("embedded nats-server with JetStream at %s", url)
            for name in self.services:
                if name in CENTRAL:
                    await self._start(name, CENTRAL[name](self.settings))
            for site in self.sites:
                await self.add_site(site)
            if "ingress" in self.services:
                self.ingress = Ingress(self.settings)
                await self.ingress.start()
                self._exit.push_async_callback(self.ingress.stop)
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def add_site(self, site: SiteSettings) -> ServiceHost:
        return await self._start(f"site-{site.name}", create_agent(self.settings, site, self.runtime))

    async def _start(self, name: str, host: ServiceHost) -> ServiceHost:
        await host.start()
        self._exit.push_async_callback(host.stop)
        self.hosts[name] = host
        return host

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()
