"""Every `medperf` verb as a user types it, against the real central services and ingress
(nats-server, SQLite): the committee submits and views a benchmark, the admin approves it, a data
owner and a model owner join it, and mistakes come back as one line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from users import stack_with_users

from cli.main import main
from shared.containers import ContainerSpec

TOKENS = {"admin": "admin-token", "committee": "committee-token", "hospital": "hospital-token", "modeler": "m-token"}


def spec_file(root: Path, name: str, *tasks: str) -> str:
    spec = ContainerSpec(
        image="example:1",
        image_digest="sha256:" + "0" * 64,
        tasks={t: {"command": ["run", t]} for t in tasks},
    ).model_dump(mode="json")
    path = root / f"{name}.json"
    path.write_text(json.dumps(spec))
    return str(path)


class Cli:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.monkeypatch, self.capsys, self.url = monkeypatch, capsys, url
        monkeypatch.setenv("MEDPERF_URL", url)

    async def __call__(self, user: str, line: str, status: int = 0) -> str:
        """``medperf LINE`` as ``user``; its stdout (stderr when it fails)."""
        self.monkeypatch.setenv("MEDPERF_TOKEN", TOKENS[user])
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, line.split())
        out, err = self.capsys.readouterr()
        assert code == status, f"medperf {line} as {user}: {code}\n{out}\n{err}"
        if status:
            # One line says what to fix, last, after any progress lines; no traceback.
            lines = err.strip().splitlines()
            assert out == "" and "Traceback" not in err, err
            assert [line for line in lines if line.startswith("error: ")] == lines[-1:], err
            return lines[-1]
        return out

    async def json(self, user: str, line: str) -> Any:
        return json.loads(await self(user, f"{line} --format json"))


@pytest.fixture
async def cli(
    tmp_path: Path, nats_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Cli]:
    monkeypatch.setenv("MEDPERF_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MEDPERF_STATE_DIR", str(tmp_path / "cli-state"))
    async with stack_with_users(tmp_path, nats_url, TOKENS) as (stack, _):
        assert stack.ingress is not None
        yield Cli(monkeypatch, capsys, stack.ingress.url)


def last_id(out: str) -> int:
    return int(next(word for word in reversed(out.replace(";", " ").split()) if word.isdigit()))


async def test_the_committee_the_admin_and_the_owners_work_through_the_cli(cli: Cli, tmp_path: Path) -> None:
    prep = last_id(
        await cli(
            "committee",
            f"container submit prep --spec {spec_file(tmp_path, 'p', 'prepare', 'sanity_check', 'statistics')}",
        )
    )
    ref_container = last_id(
        await cli("committee", f"container register ref --spec {spec_file(tmp_path, 'r', 'infer')}")
    )
    metrics = last_id(
        await cli("committee", f"container submit --name metrics -s {spec_file(tmp_path, 'm', 'evaluate')}")
    )
    ref = int((await cli("committee", f"model submit -n ref -c {ref_container}")).split()[2].rstrip(";"))
    line = (
        f"benchmark submit --name bc -p {prep} -m {ref} -e {metrics} --demo-url https://example.org/demo.tar.gz "
        f"--demo-sha256 {'b' * 64} --metric auc --metric brier:lower:median --work-dir {tmp_path / 'test'}"
    )
    # As MedPerf does, the workflow runs on the demo data before anything is registered: here the
    # demo data's host does not exist, so nothing is submitted.
    refused = await cli("committee", line, status=1)
    assert "not submitted: the workflow could not run here: could not download" in refused
    assert await cli.json("committee", "benchmark ls --mine") == []
    submitted = await cli("committee", f"{line} --no-test")
    benchmark = int(submitted.split()[2].rstrip(";"))
    [listed] = await cli.json("committee", "benchmark ls --mine")
    assert listed["id"] == benchmark and listed["approval_status"] == "PENDING"
    assert "bc" in await cli("committee", "benchmark ls")  # the table

    assert "approved" in await cli("admin", f"benchmark approve {benchmark} -y --reason fine")
    assert (await cli.json("admin", f"benchmark view {benchmark}"))["approval_status"] == "APPROVED"
    shown = await cli("committee", f"benchmark view {benchmark}")
    assert "auc combined across sites by mean, higher is better" in shown
    assert "participants: owners of an approved model or dataset" in shown
    assert "set_auto_approval" not in await cli(
        "committee", f"benchmark set_auto_approval {benchmark} --kind dataset --mode ALWAYS"
    )

    # A data owner: its site registered a dataset (the agent does this); the rest is the CLI.
    registered = await asyncio.to_thread(_register_dataset, cli, prep)
    [mine] = await cli.json("hospital", "dataset ls --mine")
    assert mine["id"] == registered and "name: scans" in await cli("hospital", f"dataset view {registered}")
    assert "changed name" in await cli("hospital", f"dataset edit {registered} --set name=scans-2024")
    assert "operational" in await cli("hospital", f"dataset set_operational {registered} -y")
    assert (await cli.json("hospital", f"dataset view {registered}"))["state"] == "OPERATION"
    assert "PENDING" in await cli("hospital", f"dataset associate {registered} -b {benchmark}")
    # Its site's agent attaches the compatibility test; without one, nobody may approve yet.
    refusal = await cli("committee", f"association approve -b {benchmark} -d {registered} -y", status=1)
    assert refusal.startswith("error: 409") and "compatibility test" in refusal
    [association] = await cli.json("hospital", "association ls")
    assert association["kind"] == "dataset" and association["status"] == "PENDING"

    # A model owner asks to join; the committee rejects it.
    container = last_id(await cli("modeler", f"container submit mine --spec {spec_file(tmp_path, 'x', 'infer')}"))
    model = int(
        (await cli("modeler", f"model submit --name mine --container {container} --operational")).split()[2].rstrip(";")
    )
    assert "PENDING" in await cli("modeler", f"model associate {model} -b {benchmark}")
    pending = await cli.json("committee", f"association ls -b {benchmark} --kind model --status PENDING")
    assert [a["component_id"] for a in pending] == [model]
    assert "priority 5" in await cli("committee", f"model set_priority {model} -b {benchmark} -p 5")
    assert "rejected" in await cli("committee", f"association reject -b {benchmark} -m {model} -y --reason no")

    assert (await cli.json("committee", f"result view {benchmark}"))["scope"] == "committee"
    assert await cli.json("committee", "result ls") == []  # no site has reported
    assert "user: hospital" in await cli("hospital", "auth status")

    # Mistakes: one line saying what is wrong.
    assert "404" in await cli("committee", "benchmark view 999", status=1)
    assert "no spec file" in await cli("modeler", "container submit y --spec /nonexistent.json", status=1)
    assert "403" in await cli("modeler", f"benchmark approve {benchmark} -y", status=1)
    assert "a benchmark needs --data-preparator" in await cli("committee", "benchmark submit --name half", status=1)


def _register_dataset(cli: Cli, prep: int) -> int:
    dataset = {
        "name": "scans",
        "site": "hospital-a",
        "data_preparator_id": prep,
        "input_hash": "c" * 64,
        "prepared_hash": "d" * 64,
        "statistics": {"cases": 10},
    }
    headers = {"Authorization": f"Bearer {TOKENS['hospital']}"}
    answer = httpx.post(f"{cli.url}/datasets", json=dataset, headers=headers, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]
