"""examples/medperf_format/: a benchmark written as MedPerf users write it (container_config.yaml,
parameters.yaml, an additional-files tarball, an MLCube-era second model, a demo tarball with
paths.yaml, results.yaml with ``Accuracy`` and ``AUC``), registered with `medperf container
submit` and run by a real site agent until both models are on the leaderboard.

Real nats-server, real services, real Docker; the images start ``FROM python:3.12-slim``, a tag
the test's private engine gets on the locally built Debian python3 base image (no registry here).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from hosting import file_host as serving
from sites import USERS, federation
from waiting import eventually

from cli.main import main
from examples.breast_cancer.images import default_cache_dir, ensure_base_image
from services.executor.settings import LocalDataset

pytestmark = [pytest.mark.engine, pytest.mark.usefixtures("docker_engine")]

EXAMPLE = Path(__file__).parents[2] / "examples" / "medperf_format"
IMAGES = {
    "prep": "medperf-format/prep:0.1",
    "model": "medperf-format/model:0.1",
    "metrics": "medperf-format/metrics:0.1",
}


@pytest.fixture(scope="module")
def images(docker_engine: None) -> dict[str, str]:
    engine = docker.from_env(timeout=600)
    try:
        ensure_base_image(engine, default_cache_dir(), log=lambda _: None)
        engine.images.get("localhost/medperf-python:bookworm").tag("python", "3.12-slim")
        return {role: str(engine.images.build(path=str(EXAMPLE / role), tag=tag)[0].id) for role, tag in IMAGES.items()}
    finally:
        engine.close()


def tarball(root: Path, out: Path) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    out.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture
def file_host(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with serving(tmp_path / "hosted") as url:
        yield tmp_path / "hosted", url


def ward(tmp_path: Path) -> tuple[Path, Path]:
    """A hospital's raw data: eight cases, one of them a measurement error the preparator drops."""
    values = {"w1": 81, "w2": 35, "w3": 62, "w4": 18, "w5": 55, "w6": 47, "w7": 70, "w8": 250}
    labels = {"w1": 1, "w2": 0, "w3": 1, "w4": 0, "w5": 1, "w6": 0, "w7": 1, "w8": 0}
    data, truth = tmp_path / "ward" / "data", tmp_path / "ward" / "labels"
    data.mkdir(parents=True)
    truth.mkdir()
    for case, value in values.items():
        (data / f"{case}.txt").write_text(f"{value}\n")
    (truth / "labels.csv").write_text("case,label\n" + "".join(f"{c},{v}\n" for c, v in labels.items()))
    for path in (tmp_path / "ward").rglob("*"):  # readable by the containers' user, as data owners are asked
        path.chmod(0o755 if path.is_dir() else 0o644)
    return data, truth


async def medperf(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], user: str, *args: str) -> str:
    monkeypatch.setenv("MEDPERF_TOKEN", USERS[user])
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def registered(out: str) -> int:
    return int(out.split("registered container ", 1)[1].split()[0])


async def test_a_medperf_benchmark_runs_unchanged_to_the_leaderboard(
    images: dict[str, str],
    file_host: tuple[Path, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hosted, url = file_host
    tarball(EXAMPLE / "model" / "additional_files", hosted / "additional_files.tar.gz")
    demo_sha256 = tarball(EXAMPLE / "demo", hosted / "demo.tar.gz")
    data, labels = ward(tmp_path)
    datasets = [LocalDataset(name="ward-7", benchmark="chest-mp", data_path=data, labels_path=labels)]
    async with federation(tmp_path, "unused", datasets=datasets, committee_for=["chest-mp"]) as fed:
        monkeypatch.setenv("MEDPERF_URL", fed.clients["admin"].url)
        monkeypatch.setenv("MEDPERF_STATE_DIR", str(tmp_path / "cli-state"))
        submit = ("container", "submit", "--state", "OPERATION")
        prep = registered(
            await medperf(monkeypatch, capsys, "committee", *submit, "--name", "mp-prep",
                          "--container-config", str(EXAMPLE / "prep" / "container_config.yaml"),
                          "--parameters-file", str(EXAMPLE / "prep" / "parameters.yaml"))
        )  # fmt: skip
        reference_container = registered(
            await medperf(monkeypatch, capsys, "committee", *submit, "--name", "mp-model",
                          "--container-config", str(EXAMPLE / "model" / "container_config.yaml"),
                          "--parameters-file", str(EXAMPLE / "model" / "parameters.yaml"),
                          "--additional-file", f"{url}/additional_files.tar.gz",
                          "--image-hash", images["model"])
        )  # fmt: skip
        metrics = registered(
            await medperf(monkeypatch, capsys, "committee", *submit, "--name", "mp-metrics",
                          "--container-config", str(EXAMPLE / "metrics" / "container_config.yaml"),
                          "--parameters-file", str(EXAMPLE / "metrics" / "parameters.yaml"))
        )  # fmt: skip
        second_container = registered(
            await medperf(monkeypatch, capsys, "modeler", *submit, "--name", "mp-mlcube",
                          "--mlcube", str(EXAMPLE / "model_mlcube" / "mlcube.yaml"),
                          "--parameters-file", str(EXAMPLE / "model_mlcube" / "workspace" / "parameters.yaml"))
        )  # fmt: skip

        # What the owner wrote comes back as written; the canonical spec pins the local image's ID.
        original = await medperf(monkeypatch, capsys, "committee", "container", "view", str(metrics), "--original")
        assert (EXAMPLE / "metrics" / "container_config.yaml").read_text().strip() in original
        stored = await fed.call("committee", "entity", "container", prep)
        assert stored["spec"]["image_digest"] == images["prep"]
        assert stored["spec"]["tasks"]["prepare"]["command"] == ["python3", "/project/prep.py", "prepare"]
        evaluator = await fed.call("committee", "entity", "container", metrics)
        assert "command" not in evaluator["spec"]["tasks"]["evaluate"]  # the image's CMD runs

        committee = "committee"
        reference = (
            await fed.call(
                committee,
                "post",
                "/models",
                {"name": "reference", "container_id": reference_container, "state": "OPERATION"},
            )
        )["id"]
        benchmark = await fed.call(
            committee,
            "submit_benchmark",
            name="chest-mp",
            data_preparator_id=prep,
            reference_model_id=reference,
            metrics_container_id=metrics,
            demo_dataset={"source": f"{url}/demo.tar.gz", "sha256": demo_sha256},
            metrics=[{"name": "Accuracy"}, {"name": "AUC"}],
            primary_metric="AUC",
            state="OPERATION",
        )
        await fed.call("admin", "decide_benchmark", benchmark, approve=True)

        async def dataset_request() -> list[dict]:
            return await fed.call(committee, "associations", benchmark, kind="dataset", status="PENDING")

        await eventually(dataset_request, "the site to prepare ward-7 and ask to join", timeout=180)
        request = (await dataset_request())[0]
        assert set(request["compatibility"]["metrics"]) == {"Accuracy", "AUC"}
        dataset = await fed.call(committee, "entity", "dataset", request["component_id"])
        # MedPerf's nested statistics, kept as written; w8 (250) was dropped by the preparator.
        assert dataset["statistics"] == {"num_cases": 7, "labels_count": {"pneumonia": 4, "normal": 3}}
        await fed.call(committee, "decide_association", benchmark, "dataset", request["component_id"], approve=True)

        # The MLCube-era model asks to join; the committee's agent tests it on the demo tarball (paths.yaml).
        second = (
            await fed.call(
                "modeler",
                "post",
                "/models",
                {"name": "mlcube-model", "container_id": second_container, "state": "OPERATION"},
            )
        )["id"]
        await fed.call("modeler", "request_association", benchmark, "model", second)

        async def tested() -> dict | None:
            found = await fed.call(committee, "associations", benchmark, kind="model", component_id=second)
            return found[0] if found and found[0]["compatibility"] else None

        await eventually(tested, "the demo-data test of the MLCube model", timeout=180)
        test = await tested()
        assert test and test["compatibility"]["passed"], test
        await fed.call(committee, "decide_association", benchmark, "model", second, approve=True)

        async def board() -> dict | None:
            found = await fed.call(committee, "leaderboard", benchmark)
            return found if len(found["rows"]) == 2 and all(r["complete"] for r in found["rows"]) else None

        await eventually(board, "both models' results on the leaderboard", timeout=180)
        rows = {row["model_id"]: row for row in (await board() or {})["rows"]}
        assert set(rows) == {reference, second}, rows
        assert all(set(row["metrics"]) == {"Accuracy", "AUC"} for row in rows.values()), rows
        # Both rank every case right (AUC 1); at 0.5 the MLCube model's centre of 40 calls w6 (47) pneumonia.
        assert (
            rows[reference]["metrics"]["Accuracy"]["mean"] == 1.0 and rows[reference]["metrics"]["AUC"]["mean"] == 1.0
        )
        assert rows[second]["metrics"]["Accuracy"]["mean"] == pytest.approx(6 / 7, abs=1e-6)
