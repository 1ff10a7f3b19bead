"""Podman through its Docker-compatible socket (``podman system service``): ``DockerRuntime`` with
what podman 4.3 does differently, rootful, on cgroup v1 (measured here; docs/containers.md)."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from typing import Any

from docker.types import Ulimit

from services.executor.engine import TaskRun
from services.executor.runtime import DockerRuntime

#: Open files and processes (of its uid, host-wide) a task may have on podman (Docker passes on
#: its own limits): enough for a data loader, and within what a podman service may hand on.
NOFILE = 65536
NPROC = 32768


class PodmanRuntime(DockerRuntime):
    """Podman through its Docker-compatible socket (``podman system service``): the same API, with
    the differences below."""

    engine_name = "podman"

    def _pull_lines(self, reference: str) -> Iterator[Any]:
        # podman's Docker-compatible pull insists on TLS even to loopback, where Docker allows plain
        # HTTP (127.0.0.0/8 is insecure by default); its own endpoint does the same as Docker.
        host = reference.split("/", 1)[0].rsplit(":", 1)[0]
        loopback = host in ("localhost", "[::1]") or host.startswith("127.")
        params = {"reference": reference, "tlsVerify": "false" if loopback else "true"}
        response = self.client.api._post(self.client.api._url("/libpod/images/pull"), params=params, stream=True)
        self.client.api._raise_for_status(response)
        return self.client.api._stream_helper(response, decode=True)

    def _memory_verdict(self, state: dict[str, Any]) -> str:
        # Podman 4.3 on cgroup v1 never sets OOMKilled (conmon misses the kernel's event), so a
        # SIGKILL nobody here sent (exit 137; the timeout's and output limit's kills are told
        # apart before this) is taken for the memory limit's, and said to be a likely cause.
        if state.get("OOMKilled") or state.get("ExitCode") != 137:
            return super()._memory_verdict(state)
        return f"was killed (SIGKILL), most likely for using more than its memory limit of {self._memory_advice()}"

    def _create_kwargs(self, task: TaskRun) -> dict[str, Any]:
        kwargs = super()._create_kwargs(task)
        # Rootful podman asks runc for 1048576 open files and 4194304 processes; above the hard
        # limits of the podman service (it holds its own RLIMIT_NPROC to 32768), and without
        # CAP_SYS_RESOURCE, runc cannot set them and the container never starts. Docker passes
        # the engine's own limits on; this asks for at most the agent's. Processes stay bounded by
        # the pids limit; RLIMIT_NPROC counts the uid's processes across the host.
        for name, value in ulimits().items():
            kwargs["ulimits"].append(Ulimit(name=name, soft=value, hard=value))
        return kwargs


def ulimits() -> dict[str, int]:
    """The open files and processes a task asks podman for: at most this process's own hard limits."""
    found = {}
    for name, which, most in (("nofile", resource.RLIMIT_NOFILE, NOFILE), ("nproc", resource.RLIMIT_NPROC, NPROC)):
        _, hard = resource.getrlimit(which)
        found[name] = most if hard == resource.RLIM_INFINITY else min(hard, most)
    return found
