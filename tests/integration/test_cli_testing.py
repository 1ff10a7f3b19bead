"""`medperf test run` end to end: a model owner tests docs/containers.md's minimal benchmark on their
own machine (the real Docker engine, the site's pipeline), sees the metrics, submits the signed test,
and the committee, which runs no agent, approves the model on it.

The images are built by the doc's own commands (tests/integration/minimal.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hosting import file_host as serving
from minimal import build_minimal
from waiting import eventually

from cli.client import Client
from cli.main import main
from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.settings import Settings

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("docker_engine")]

USERS = {"admin": "t-admin", "committee": "t-committee", "modeler": "t-modeler"}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The minimal benchmark's images and specs, built with the doc's own commands."""
    workdir = tmp_path_factory.mktemp("reader")
    build_minimal(workdir)
    return workdir


@pytest.fixture
def file_host(built: Path) -> Iterator[str]:
    with serving(built) as url:
        yield url


@pytest.fixture
async def clients(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Client]]]:
    """The central services, no site agent at all (so no committee agent either)."""
    settings = Settings(
        state_dir=tmp_path / "state",
        http_port=0,
        admins=["admin"],
        api_token_digests={token_digest(t): u for u, t in USERS.items()},
    )
    async with Stack(settings) as stack:
        assert stack.ingress
        users = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
        try:
            yield stack.ingress.url, users
        finally:
            for client in users.values():
                client.close()


def spec(built: Path, role: str) -> dict[str, Any]:
    return json.loads((built / f"minimal-{role}.json").read_text())


def register(built: Path, url: str, c: dict[str, Client]) -> tuple[int, int]:
    """The committee's minimal benchmark (approved) and the modeler's model: their ids."""
    committee, modeler = c["committee"], c["modeler"]
    ids = {
        role: committee.post("/containers", {"name": role, "spec": spec(built, role), "state": "OPERATION"})["id"]
        for role in ("prep", "model", "metrics")
    }
    reference = committee.post("/models", {"name": "ref", "container_id": ids["model"], "state": "OPERATION"})["id"]
    demo = (built / "minimal-demo.tar.gz").read_bytes()
    benchmark = committee.post(
        "/benchmarks",
        {
            "name": "minimal",
            "data_preparator_id": ids["prep"],
            "reference_model_id": reference,
            "metrics_container_id": ids["metrics"],
            "demo_dataset": {"source": f"{url}/minimal-demo.tar.gz", "sha256": hashlib.sha256(demo).hexdigest()},
            "metrics": [{"name": "accuracy"}, {"name": "sensitivity"}],
            "primary_metric": "accuracy",
            "state": "OPERATION",
        },
    )["id"]
    c["admin"].post(f"/benchmarks/{benchmark}/decision", {"approve": True})
    container = modeler.post("/containers", {"name": "mine", "spec": spec(built, "model"), "state": "OPERATION"})
    model = modeler.post("/models", {"name": "mine", "container_id": container["id"], "state": "OPERATION"})["id"]
    return benchmark, model


async def test_a_model_owner_tests_locally_submits_and_the_committee_approves_on_it(
    built: Path,
    file_host: str,
    clients: tuple[str, dict[str, Client]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, c = clients
    benchmark, model = await asyncio.to_thread(register, built, file_host, c)
    monkeypatch.setenv("MEDPERF_URL", url)
    monkeypatch.setenv("MEDPERF_TOKEN", USERS["modeler"])
    monkeypatch.setenv("MEDPERF_CONFIG_DIR", str(tmp_path / "config"))
    work = tmp_path / "work"

    # A local container spec on local data: metrics shown, nothing sent.
    local = ["test", "run", "-b", str(benchmark), "--container", str(built / "minimal-model.json")]
    data = ["--data-path", str(built / "examples/minimal/demo/data")]
    data += ["--labels-path", str(built / "examples/minimal/demo/labels")]
    capsys.readouterr()
    assert await asyncio.to_thread(main, [*local, *data, "--work-dir", str(work), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["metrics"] == pytest.approx({"accuracy": 6 / 7, "sensitivity": 3 / 4})
    assert report["signature"] is None and await asyncio.to_thread(c["committee"].associations, benchmark) == []
    refused = await asyncio.to_thread(main, [*local, "--submit"])
    assert refused == 1 and "--submit needs a registered model" in capsys.readouterr().err

    # The registered model on the benchmark's demo data, submitted signed.
    argv = ["test", "run", "-b", str(benchmark), "--model", str(model), "--submit", "--work-dir", str(work)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert out.index("accuracy") < out.index("asked to join")  # the metrics come before anything is sent
    assert "0.8571" in out and "site workstation-modeler: PENDING" in out
    key = tmp_path / "config" / "keys" / "default.key"
    assert key.stat().st_mode & 0o777 == 0o600

    (row,) = await asyncio.to_thread(c["committee"].associations, benchmark, kind="model")
    shown = row["compatibility"]
    assert (row["status"], shown["passed"], shown["site"]) == ("PENDING", True, "workstation-modeler")
    assert set(shown["container_digests"]) == {"preparator", "model", "metrics"} and shown["signature"]
    # No committee agent: the committee decides on the owner's signed test.
    await asyncio.to_thread(c["committee"].decide_association, benchmark, "model", model, approve=True)

    async def approved() -> bool:
        rows = await asyncio.to_thread(c["committee"].associations, benchmark, kind="model")
        return rows[0]["status"] == "APPROVED"

    await eventually(approved, "the model's association to be approved")
