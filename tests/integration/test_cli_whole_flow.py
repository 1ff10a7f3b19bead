"""The whole flow, every role, with `medperf` verbs only, each a real process as a person types it:
no raw HTTP, no test helper that talks to a service.

The admin bootstraps and serves; the committee registers docs/containers.md's minimal benchmark
(which runs on its demo data here before it is submitted); the admin approves it; a hospital runs an
agent and hands it a dataset; the committee approves the dataset; a model owner tests a model on
the demo data, submits the signed test, and the committee approves it; the board shows both models'
results from the hospital, and each owner reads the jobs of what they own.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hosting import file_host
from minimal import ROOT, build_minimal

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("docker_engine")]

MEDPERF = shutil.which("medperf", path=str(Path(sys.executable).parent))
PEOPLE = ("admin", "committee", "hospital", "modeler")


class People:
    """Each person on their own machine: their own CLI configuration (profile, token, keys)."""

    def __init__(self, root: Path, site: dict[str, str]) -> None:
        self.root, self.site = root, site
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDPERF_")}
        self.base = {**base, "MEDPERF_STATE_DIR": str(root / "state"), "MEDPERF_HTTP_PORT": "0"}

    def env(self, who: str) -> dict[str, str]:
        extra = self.site if who == "hospital" else {}  # the data owner works on the site's machine
        return {**self.base, "MEDPERF_CONFIG_DIR": str(self.root / who), **extra}

    def __call__(self, who: str, *argv: str) -> str:
        assert MEDPERF
        done = subprocess.run(
            [MEDPERF, *argv], cwd=self.root, env=self.env(who), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"medperf {' '.join(argv)} as {who}: {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    def json(self, who: str, *argv: str) -> object:
        return json.loads(self(who, *argv, "--format", "json"))

    def start(self, who: str, *argv: str) -> subprocess.Popen[str]:
        assert MEDPERF
        return subprocess.Popen(
            [MEDPERF, *argv],
            cwd=self.root,
            env={**self.env(who), **self.site},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def until(check: Callable[[], object], what: str, timeout: float = 180) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def last_number(text: str) -> int:
    return int(next(w for w in reversed(text.replace(";", " ").split()) if w.isdigit()))


def number_after(text: str, words: str) -> int:
    return int(text.split(words, 1)[1].split()[0].rstrip(";"))


@pytest.fixture
def built(tmp_path: Path) -> Path:
    workdir = tmp_path / "committee-machine"
    workdir.mkdir()
    build_minimal(workdir)
    return workdir


@pytest.fixture
def people(tmp_path: Path) -> Iterator[People]:
    site = {
        "MEDPERF_SITE_NAME": "hospital-a",
        "MEDPERF_SITE_OWNER": "hospital",
        "MEDPERF_SITE_WORK_DIR": str(tmp_path / "site"),
    }
    yield People(tmp_path, site)


def test_every_role_through_the_cli_from_bootstrap_to_the_board(people: People, built: Path, tmp_path: Path) -> None:
    people("admin", "admin", "bootstrap", "admin")
    serve = people.start("admin", "serve")
    agent: subprocess.Popen[str] | None = None
    try:
        assert serve.stdout is not None
        printed: list[str] = []
        while not any(line.startswith("MEDPERF_NATS_URL=") for line in printed):
            line = serve.stdout.readline()
            assert line, "medperf serve ended:\n" + "".join(printed)
            printed.append(line)
        url = next(w for line in printed for w in line.split() if w.startswith("http://"))
        nats_url = next(line for line in printed if line.startswith("MEDPERF_NATS_URL=")).split("=", 1)[1].strip()
        people.site["MEDPERF_NATS_URL"] = nats_url

        # The admin creates the other people and hands each a token; each logs in on their machine.
        people("admin", "profile", "set", "--url", url)
        for who in PEOPLE[1:]:
            people("admin", "admin", "create-user", who)
            token = people("admin", "admin", "issue-token", who).strip().splitlines()[-1]
            people(who, "auth", "login", "--url", url, "--token", token)
            assert f"user: {who}" in people(who, "auth", "status")

        # The committee: three containers, the reference model, and the benchmark, tested here first.
        ids = {}
        for role in ("prep", "model", "metrics"):
            spec = str(built / f"minimal-{role}.json")
            ids[role] = last_number(people("committee", "container", "submit", "--name", role, "--spec", spec))
        reference = number_after(
            people("committee", "model", "submit", "--name", "threshold", "--container", str(ids["model"])),
            "registered model",
        )
        with file_host(built) as host:
            demo_hash = hashlib.sha256((built / "minimal-demo.tar.gz").read_bytes()).hexdigest()
            submitted = people(
                "committee",
                *("benchmark", "submit", "--name", "minimal", "-p", str(ids["prep"]), "-m", str(reference)),
                *("-e", str(ids["metrics"]), "--demo-url", f"{host}/minimal-demo.tar.gz", "--demo-sha256", demo_hash),
                *("--metric", "accuracy", "--metric", "sensitivity", "--work-dir", str(tmp_path / "committee-test")),
            )
            assert "the workflow ran on the demo data: accuracy 0.8571, sensitivity 0.75" in submitted
            benchmark = number_after(submitted, "submitted benchmark")
            people("admin", "benchmark", "approve", str(benchmark), "-y")

            # The hospital: its agent runs; its data owner hands it a dataset (readable by the tasks' uid).
            raw = tmp_path / "hospital-data"
            shutil.copytree(ROOT / "examples" / "minimal" / "demo", raw)
            for path in [raw, *raw.rglob("*")]:
                path.chmod(0o755 if path.is_dir() else 0o644)
            agent = people.start("hospital", "agent")
            handed = people(
                "hospital",
                *("dataset", "submit", "-b", str(benchmark), "-d", str(raw / "data"), "-l", str(raw / "labels")),
                *("-n", "ward-7", "-y"),
            )
            assert "statistics" in handed
            [dataset] = [d for d in people.json("hospital", "dataset", "ls", "--mine") if d["name"] == "ward-7"]  # type: ignore[union-attr, index]

            def requested(kind: str) -> object:
                rows = people.json("committee", "association", "ls", "-b", str(benchmark), "--kind", kind)
                return [r for r in rows if r["status"] == "PENDING"]  # type: ignore[union-attr, index]

            [request] = until(lambda: requested("dataset"), "the dataset's request to join")  # type: ignore[misc]
            assert request["component_id"] == dataset["id"] and request["compatibility"]["passed"]
            people("committee", "association", "approve", "-b", str(benchmark), "-d", str(dataset["id"]), "-y")

            # The model owner: registers a model, tests it here on the demo data, submits the signed test.
            container = last_number(
                people("modeler", "container", "submit", "--name", "mine", "--spec", str(built / "minimal-model.json"))
            )
            model = number_after(
                people("modeler", "model", "submit", "--name", "mine", "--container", str(container), "--operational"),
                "registered model",
            )
            tested = people(
                "modeler",
                *("test", "run", "-b", str(benchmark), "--model", str(model), "--submit"),
                *("--work-dir", str(tmp_path / "modeler-test")),
            )
            assert "asked to join" in tested
            [asked] = until(lambda: requested("model"), "the model's request to join")  # type: ignore[misc]
            assert asked["compatibility"]["site"] == "workstation-modeler"
            people("committee", "association", "approve", "-b", str(benchmark), "-m", str(model), "-y")

            def board() -> object:
                table = people("committee", "leaderboard", str(benchmark), "--format", "csv")
                rows = list(csv.DictReader(io.StringIO(table)))
                return rows if {r["model"] for r in rows} >= {"threshold", "mine"} else None

            rows = until(board, "both models' results from the hospital on the board", timeout=300)
            for row in rows:  # type: ignore[union-attr]
                assert float(row["mean_accuracy"]) == pytest.approx(6 / 7, abs=1e-3), row
                assert float(row["hospital-a"]) == pytest.approx(6 / 7, abs=1e-3) and row["complete"] == "True", row

        # Each owner reads the jobs of what they own: the model owner sees its model's run, no log tail.
        jobs = people.json("modeler", "console", "jobs")
        assert jobs and all(job["model_id"] == model for job in jobs)  # type: ignore[union-attr, index]
        assert people.json("hospital", "console", "jobs")  # its site's, reference model included
    finally:
        if agent is not None:
            stop(agent)
        stop(serve)
