"""A hosted file that is wrong (not its registered hash, a web page, a demo tarball without
paths.json) is the fault of whoever registered it: final, never retried, and a compatibility test
that hits one reports failed with the reason, so the request can be decided. Real services, a real
nats-server, Docker and a local file host."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosting import file_host as serving
from sites import Federation, federation, model
from waiting import eventually

from cli.client import ApiError

pytestmark = pytest.mark.engine


@pytest.fixture
def hosted(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    with serving(tmp_path / "hosted") as url:
        yield tmp_path / "hosted", url


def tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PATHS = b'{"data_path": "data", "labels_path": "labels"}'
GOOD_DEMO = tarball({"paths.json": PATHS, "data/c1": b"1", "labels/c1": b"0"})


def demo_case(case: str, root: Path, url: str) -> tuple[dict, str]:
    """The demo dataset's registration for ``case``, and words its failure must contain."""
    if case == "hash":
        (root / "demo.tgz").write_bytes(GOOD_DEMO)
        return {"source": f"{url}/demo.tgz", "sha256": "ab" * 32}, "does not match its registered hash"
    if case == "html":
        page = b"<!DOCTYPE html><html><body>Sign in to download</body></html>"
        (root / "demo.html").write_bytes(page)
        return {"source": f"{url}/demo.html", "sha256": sha(page)}, "returns a web page"
    bad = tarball({"data/c1": b"1", "labels/c1": b"0"})  # no paths.json
    (root / "demo.tgz").write_bytes(bad)
    return {"source": f"{url}/demo.tgz", "sha256": sha(bad)}, "paths.json"


async def ask_to_join(fed: Federation, name: str, spec: dict) -> int:
    """A model asks to join with no test attached: the committee's site tests it on the demo data."""
    container = (await fed.call("modeler", "post", "/containers", {"name": name, "spec": spec, "state": "OPERATION"}))[
        "id"
    ]
    model_id = (
        await fed.call("modeler", "post", "/models", {"name": name, "container_id": container, "state": "OPERATION"})
    )["id"]
    body = {"kind": "model", "component_id": model_id}

    async def asked() -> bool:
        try:
            await fed.call("modeler", "post", f"/benchmarks/{fed.benchmark_id}/associations", body)
            return True
        except ApiError:  # the approvals service learns of the model from an event
            return False

    await eventually(asked, "the model's request to be accepted")
    return model_id


@pytest.mark.parametrize("case", ["hash", "html", "no-paths"])
async def test_a_bad_demo_dataset_fails_the_test_as_the_benchmarks_fault(
    tmp_path: Path, busybox_image: str, hosted: tuple[Path, str], case: str
) -> None:
    demo, words = demo_case(case, *hosted)
    async with federation(tmp_path, busybox_image, committee_for=["bench"]) as fed:
        await fed.join(demo_dataset=demo)
        model_id = await ask_to_join(fed, "candidate", model(busybox_image))

        async def tested() -> dict | None:
            rows = await fed.call("committee", "associations", fed.benchmark_id, kind="model", component_id=model_id)
            return rows[0]["compatibility"] if rows and rows[0].get("compatibility") else None

        await eventually(tested, "the committee's site to report its test", timeout=60)
        report = await tested()
        assert report is not None and report["passed"] is False and report["failure"] == "benchmark"
        assert words in report["detail"]
        failed = [e for e in await fed.events(".job.failed") if e["kind"] == "compatibility"]
        assert [(e["model_id"], e["failure"], e["will_retry"]) for e in failed] == [(model_id, "benchmark", False)]
        assert words in failed[0]["reason"]
        # The request can be decided: approving says why not, rejecting works.
        with pytest.raises(ApiError, match="compatibility test failed"):
            await fed.call("committee", "decide_association", fed.benchmark_id, "model", model_id, approve=True)
        decided = await fed.call("committee", "decide_association", fed.benchmark_id, "model", model_id, approve=False)
        assert decided["status"] == "REJECTED"


async def test_a_model_whose_files_fail_their_hash_fails_as_its_own_fault_once(
    tmp_path: Path, busybox_image: str, hosted: tuple[Path, str]
) -> None:
    root, url = hosted
    (root / "weights.tgz").write_bytes(tarball({"w": b"weights v2"}))  # replaced after registration
    spec = model(busybox_image, "cat /extra/w > /out/p1")
    spec["additional_files"] = {"source": f"{url}/weights.tgz", "sha256": sha(b"weights v1")}
    spec["tasks"]["infer"]["inputs"]["additional_files"] = {"mount_path": "/extra"}
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        container = (
            await fed.call("modeler", "post", "/containers", {"name": "m", "spec": spec, "state": "OPERATION"})
        )["id"]
        model_id = await fed.register_and_associate("m", container)
        job = await fed.job_reaches(model_id, "failed")
        assert job.failure == "model" and job.attempts == 1
        assert "does not match its registered hash" in job.detail
        (event,) = [e for e in await fed.events(".job.failed") if e["model_id"] == model_id]
        assert event["failure"] == "model" and event["will_retry"] is False


async def test_after_the_last_delivery_the_failure_is_final(tmp_path: Path, busybox_image: str) -> None:
    """The demo data's host is down (connection refused): the site's infrastructure, retried with
    the event until it is dead-lettered; the last failure, and the console's job, say it is final."""
    closed = {"source": "http://127.0.0.1:9/demo.tgz", "sha256": "ab" * 32}  # the discard port: nothing listens
    async with federation(tmp_path, busybox_image, committee_for=["bench"], max_deliveries=2) as fed:
        await fed.join(demo_dataset=closed)
        model_id = await ask_to_join(fed, "candidate", model(busybox_image))

        async def failures() -> list[dict] | None:
            found = [e for e in await fed.events(".job.failed") if e["kind"] == "compatibility"]
            return found if len(found) == 2 else None

        await eventually(failures, "both deliveries to fail", timeout=60)
        found = await failures()
        assert found is not None
        assert [(e["model_id"], e["failure"], e["will_retry"]) for e in found] == [
            (model_id, "infrastructure", True),
            (model_id, "infrastructure", False),
        ]

        async def console_says_final() -> list[dict]:
            jobs = await fed.call("admin", "get", "/console/jobs", model_id=model_id, status="failed")
            return [j for j in jobs if j["job_id"] == found[-1]["job_id"] and j["will_retry"] is False]

        await eventually(console_says_final, "the console to show the last failure as final")
