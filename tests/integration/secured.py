"""Real nats-server processes configured as production runs them: users from a credential store,
and optionally three nodes clustered with JetStream (configs from shared/nats_config.py)."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from shared.broker import EmbeddedNats
from shared.nats_config import CENTRAL, CredentialStore, render_authorization, render_node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SecuredNats:
    """``nodes`` nats-servers sharing one authorization file; ``passwords`` of every user issued."""

    root: Path
    nodes: int = 1
    sites: tuple[str, ...] = ()
    store: CredentialStore = field(init=False)
    passwords: dict[str, str] = field(default_factory=dict)
    servers: list[EmbeddedNats] = field(default_factory=list)
    _exit: ExitStack = field(default_factory=ExitStack)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = CredentialStore(self.root / "nats-users.json")
        for user, password in (
            self.store.issue_service("central", CENTRAL),
            self.store.issue_operator("operator"),
            *(self.store.issue_site(site) for site in self.sites),
        ):
            self.passwords[user] = password
        self.write_authorization()
        clients = [free_port() for _ in range(self.nodes)]
        routes = [free_port() for _ in range(self.nodes)]
        for i in range(self.nodes):
            config = self.root / f"n{i}.conf"
            config.write_text(
                render_node(
                    f"n{i}",
                    client=f"127.0.0.1:{clients[i]}",
                    store_dir=str(self.root / f"n{i}"),
                    cluster=f"127.0.0.1:{routes[i]}" if self.nodes > 1 else None,
                    routes=[f"nats-route://127.0.0.1:{p}" for j, p in enumerate(routes) if j != i],
                    include="auth.conf",
                )
            )
            self.servers.append(EmbeddedNats(self.root / f"n{i}", config=config))

    def write_authorization(self) -> None:
        (self.root / "auth.conf").write_text(render_authorization(self.store.users.values()))

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (as MEDPERF_NATS_URL takes them)."""
        return ",".join(s.url for s in self.servers if s.url)

    def revoke(self, user: str) -> None:
        self.store.revoke(user)
        self.write_authorization()
        for server in self.servers:
            if server.process is not None:
                server.reload()

    def __enter__(self) -> SecuredNats:
        for server in self.servers:
            self._exit.enter_context(server)
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()
