"""Every ```bash block of docs/*.md is run as written by a test, or listed here with the reason it
cannot be; a new block that is neither fails, and so does an entry whose block is gone. The README's
blocks are accounted for in test_readme_runs.py.

Run here: docs/deployment.md's credential commands, in a copy of deploy/, and the nats-server
configuration they write is checked by nats-server itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from minimal import ROOT

from shared.broker import nats_server_binary

DOCS = sorted((ROOT / "docs").glob("*.md"))

#: (doc, first line of the block without its comment) -> the test that runs it, or why none does.
RUN_ELSEWHERE = {
    ("containers.md", "for role in prep model metrics; do"): "run as written by tests/integration/test_readme_runs.py "
    "(the README sends the committee there) and by minimal.build_minimal (test_container_contract.py, "
    "test_cli_testing.py, test_cli_whole_flow.py)",
    ("deployment.md", 'S="medperf nats --store deploy/nats/nats-users.json --auth-conf deploy/nats/auth.conf"'): (
        "run as written here (test_deployment_credentials_run_as_written)"
    ),
}
NOT_RUN = {
    ("deployment.md", "docker compose kill -s HUP nats-1 nats-2 nats-3"): "needs the compose deployment running, "
    "whose images come from a registry; tests/unit/test_compose.py checks compose.yaml with `docker compose config`",
    ("deployment.md", "docker compose build"): "the same: builds and starts the production topology; "
    "tests/unit/test_compose.py checks the file, tests/integration/test_cluster.py runs the three-node cluster",
    ("deployment.md", "pip install medperf-federation"): "a site's production setup: a remote cluster "
    "(fed.example.org), its issued credentials, a package index; tests/integration/test_site_credentials.py runs an "
    "agent with issued credentials against a secured NATS",
    ("performance.md", ".venv/bin/python bench/scale.py --sites 10 100 300 --models 1 10 50 [--json rows.json]"): (
        "a benchmark of many minutes, whose figures the doc reports; its [--json] is optional syntax"
    ),
    ("performance.md", ".venv/bin/python bench/executor.py --megabytes 256 --tasks 15"): (
        "downloads 256 MB and runs 32 containers on each engine (the block's second line: podman): minutes, "
        "whose figures the doc reports"
    ),
    ("performance.md", ".venv/bin/python bench/dataset.py --dir /var/tmp/medperf-dataset --gigabytes 20"): (
        "writes and hashes 20 GB: minutes of both cores and the disk"
    ),
    ("reliability.md", "export DOCKER_HOST=unix://$PWD/.medperf/dockerd/docker.sock"): "runs the test suites "
    "themselves (scripts/test runs every test in CI)",
}


def blocks(path: Path) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", path.read_text(), re.S)


def first_line(block: str) -> str:
    line = next(line for line in block.splitlines() if line.strip())
    return re.sub(r"\s+#.*$", "", line).strip()


def test_every_docs_block_is_run_or_says_why_not() -> None:
    found = [(doc.name, first_line(block)) for doc in DOCS for block in blocks(doc)]
    assert len(found) >= 7
    for key in found:
        assert (key in RUN_ELSEWHERE) != (key in NOT_RUN), (
            f"docs/{key[0]}: block `{key[1]}` is neither run by a test nor listed with the reason it cannot run "
            "(tests/integration/test_doc_blocks.py)"
        )
    gone = (set(RUN_ELSEWHERE) | set(NOT_RUN)) - set(found)
    assert not gone, f"tests/integration/test_doc_blocks.py lists blocks the docs no longer have: {gone}"


def test_deployment_credentials_run_as_written(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    [block] = [b for b in blocks(ROOT / "docs" / "deployment.md") if b.startswith('S="medperf nats')]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for user in ("registry", "approvals", "aggregator", "console", "ingress", "ops", "site-hospital-a"):
        assert f"MEDPERF_NATS_USER={user}\n" in done.stdout, user
        assert re.search(rf"^{user}\t", done.stdout, re.M), f"`$S ls` does not list {user}"
    # The three nodes include the rewritten auth.conf: nats-server must accept each node's configuration.
    for node in ("nats-1", "nats-2", "nats-3"):
        checked = subprocess.run(
            [nats_server_binary(), "-t", "-c", f"deploy/nats/{node}.conf"], cwd=tmp_path, capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (tmp_path / "deploy" / "nats" / "auth.conf").stat().st_mode & 0o077 == 0, "auth.conf holds hashes: 0600"
