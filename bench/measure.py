"""What the benches share: what they read off the processes they measure (Linux /proc), their
percentiles, and how they wait for a service they started."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import httpx


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU time a process has used so far: all its threads, and with ``children``
    its live child processes too (e.g. the aggregator's signature checker)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    if not children:
        return own
    spawned = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return own + sum(cpu_seconds(int(child), children=True) for child in spawned)


def rss_kib(pid: int) -> tuple[int, int]:
    """A process's resident set now and at its peak, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def until_answers(client: httpx.AsyncClient, path: str, attempts: int = 300) -> None:
    """Until ``path`` answers 200 (every 0.1 s; a service just started may still be connecting)."""
    for _ in range(attempts):
        try:
            if (await client.get(path)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{client.base_url}{path} did not answer")
