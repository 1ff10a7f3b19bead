"""`medperf` as real processes, in a real terminal where a person would sit: `medperf serve` with no
arguments (refused by argparse on Python 3.11 before), the first admin made with `admin bootstrap`
before the server runs, a y/N prompt, and one line for a server that is not there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

MEDPERF = shutil.which("medperf", path=str(Path(sys.executable).parent))


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDPERF_")}
    return {**clean, "MEDPERF_CONFIG_DIR": str(tmp_path / "config"), "MEDPERF_HTTP_PORT": "0", **extra}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """`medperf admin bootstrap alice`, then `medperf serve` with no arguments, as written in the README."""
    assert MEDPERF
    environment = env(tmp_path)
    boot = subprocess.run(
        [MEDPERF, "admin", "bootstrap", "alice"], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert boot.returncode == 0, boot.stderr
    assert "MEDPERF_API_TOKEN_DIGESTS=" in boot.stdout and "MEDPERF_ADMINS='[\"alice\"]'" in boot.stdout
    serve = subprocess.Popen(
        [MEDPERF, "serve"], cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert serve.stdout is not None
        lines = []
        while not any(line.startswith("MEDPERF_NATS_URL=") for line in lines):
            line = serve.stdout.readline()
            assert line, f"medperf serve ended: {serve.wait()}\n{''.join(lines)}{serve.stderr.read()}"  # type: ignore[union-attr]
            lines.append(line)
        url = next(w for line in lines for w in line.split() if w.startswith("http://"))
        nats_url = next(line for line in lines if line.startswith("MEDPERF_NATS_URL="))
        assert nats_url.strip().removeprefix("MEDPERF_NATS_URL=").startswith("nats://127.0.0.1:")
        yield environment, url
    finally:
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0


def test_serve_with_no_arguments_trusts_the_bootstrapped_admin(
    served: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    environment, url = served
    subprocess.run([MEDPERF, "profile", "set", "--url", url], env=environment, check=True, capture_output=True)  # type: ignore[list-item]
    status = subprocess.run(
        [MEDPERF, "auth", "status"],
        env=environment,
        capture_output=True,
        text=True,  # type: ignore[list-item]
    )
    assert status.returncode == 0, status.stderr
    assert "user: alice" in status.stdout and "admin: true" in status.stdout


def test_set_operational_asks_and_no_changes_nothing(served: tuple[dict[str, str], str], tmp_path: Path) -> None:
    import httpx

    environment, url = served
    subprocess.run([MEDPERF, "profile", "set", "--url", url], env=environment, check=True, capture_output=True)  # type: ignore[list-item]
    token = __import__("json").loads((tmp_path / "config" / "profiles.json").read_text())["profiles"]["default"][
        "token"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    spec = {"image": "x:1", "image_digest": "sha256:" + "0" * 64}
    tasks = {t: {"command": ["a"]} for t in ("prepare", "sanity_check", "statistics")}
    prep = httpx.post(f"{url}/containers", json={"name": "p", "spec": {**spec, "tasks": tasks}}, headers=headers)
    dataset = {
        "name": "scans",
        "site": "hospital-a",
        "data_preparator_id": prep.json()["id"],
        "input_hash": "c" * 64,
        "prepared_hash": "d" * 64,
        "statistics": {"cases": 3},
    }
    made = httpx.post(f"{url}/datasets", json=dataset, headers=headers)
    assert made.status_code == 201, made.text
    dataset_id = str(made.json()["id"])

    child = pexpect.spawn(
        MEDPERF, ["dataset", "set-operational", dataset_id], env=environment, encoding="utf-8", timeout=30
    )  # type: ignore[arg-type]
    child.expect(r"operational\? .*\[y/N\] ")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "cancelled; nothing was changed" in child.before
    assert httpx.get(f"{url}/datasets/{dataset_id}", headers=headers).json()["state"] == "DEVELOPMENT"

    child = pexpect.spawn(
        MEDPERF, ["dataset", "set_operational", dataset_id], env=environment, encoding="utf-8", timeout=30
    )  # type: ignore[arg-type]
    child.expect(r"\[y/N\] ")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert httpx.get(f"{url}/datasets/{dataset_id}", headers=headers).json()["state"] == "OPERATION"


def test_an_unreachable_server_is_one_line_in_a_terminal(tmp_path: Path) -> None:
    environment = env(tmp_path, MEDPERF_URL="http://127.0.0.1:9", MEDPERF_TOKEN="t")
    child = pexpect.spawn(MEDPERF, ["benchmark", "ls"], env=environment, encoding="utf-8", timeout=30)  # type: ignore[arg-type]
    child.expect(pexpect.EOF)
    child.close()
    lines = child.before.strip().splitlines()
    assert child.exitstatus == 1 and len(lines) == 1, child.before
    assert lines[0].startswith("error: cannot reach http://127.0.0.1:9") and "medperf serve" in lines[0]
