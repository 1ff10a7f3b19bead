"""compose.yaml is checked, not started (no image can be pulled here): by `docker compose config`
where the plugin exists, and always by reading it: every reference resolves, every file it mounts
or builds from exists, and the NATS configs it mounts are valid for nats-server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.broker import nats_server_binary

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "POSTGRES_PASSWORD": "x",
    "NATS_PASSWORD_REGISTRY": "x",
    "NATS_PASSWORD_APPROVALS": "x",
    "NATS_PASSWORD_AGGREGATOR": "x",
    "NATS_PASSWORD_INGRESS": "x",
    "SITE_NATS_PASSWORD": "x",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _compose_plugin() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0  # type: ignore[list-item]


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed (the YAML checks run)")
def test_docker_compose_accepts_the_file() -> None:
    env = {**os.environ, **SECRETS}
    run = subprocess.run(
        ["docker", "compose", "--profile", "site", "config", "-q"], cwd=ROOT, env=env, capture_output=True
    )
    assert run.returncode == 0, run.stderr.decode()


def test_every_reference_in_the_compose_file_resolves(compose: dict[str, Any]) -> None:
    services, volumes = compose["services"], set(compose.get("volumes", {}))
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: neither image nor build"
        if build := service.get("build"):
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: no Dockerfile"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on undefined {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            elif not source.startswith(("/", "$")):
                assert source in volumes, f"{name} uses undeclared volume {source}"


def test_the_topology_is_the_production_one(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats_nodes = sorted(n for n in services if n.startswith("nats-"))
    assert nats_nodes == ["nats-1", "nats-2", "nats-3"]
    for name in ("registry", "approvals", "aggregator", "ingress", "site-agent"):
        env = services[name]["environment"]
        # every node, so clients fail over; and credentials of the process's own
        assert all(f"nats://{n}:4222" in env["MEDPERF_NATS_URL"] for n in nats_nodes), name
        assert env["MEDPERF_NATS_USER"] and env["MEDPERF_NATS_PASSWORD"].startswith("${")
    for name in ("registry", "approvals", "aggregator", "ingress"):
        assert services[name]["environment"]["MEDPERF_NATS_REPLICAS"] == "3"
        assert services[name]["environment"]["MEDPERF_NATS_USER"] == name
    assert services["registry"]["deploy"]["replicas"] >= 2 and services["aggregator"]["deploy"]["replicas"] >= 2
    assert services["site-agent"]["profiles"] == ["site"]  # hospitals run it; `up` at the centre does not


def test_the_mounted_nats_configs_are_valid_and_route_to_each_other(compose: dict[str, Any]) -> None:
    for node in ("nats-1", "nats-2", "nats-3"):
        command = compose["services"][node]["command"]
        config = ROOT / "deploy" / "nats" / Path(command[command.index("-c") + 1]).name
        text = config.read_text()
        others = {f"nats-route://{n}:6222" for n in ("nats-1", "nats-2", "nats-3") if n != node}
        assert all(route in text for route in others) and f"nats-route://{node}:" not in text
        check = subprocess.run([nats_server_binary(), "-t", "-c", str(config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
