"""A site's jobs against the real services, a real nats-server and Docker: consent, cancel, drain,
failures and partial results. The containers are busybox shell scripts, so each run takes well
under a second unless a test asks the model to sleep."""

from __future__ import annotations

import asyncio
from pathlib import Path

import docker
import pytest
from sites import SITE, Federation, federation, model
from waiting import eventually

from cli.client import ApiError
from cli.render import provenance_table
from services.aggregator.boards import Boards
from services.aggregator.handlers import get_leaderboard
from services.aggregator.rebuild import rebuild
from services.aggregator.store import TABLES
from services.executor import operations
from services.executor.runner import JOB_LABEL, SITE_LABEL
from shared.commands import GetLeaderboard
from shared.db import Database, UnitOfWork

pytestmark = pytest.mark.engine


async def test_review_policy_holds_results_until_the_data_owner_releases_them(
    tmp_path: Path, busybox_image: str
) -> None:
    async with federation(tmp_path, busybox_image, release="review") as fed:
        await fed.join()
        model_id = await fed.add_model("m2", "echo 1 > /out/p1")
        job = await fed.job_reaches(model_id, "succeeded")
        assert job.release == "held"
        pending = {j.id for j in await operations.jobs(fed.uow(), pending_release=True)}
        assert job.id in pending  # so is the reference model's kept compatibility run
        await asyncio.sleep(1.5)  # a relay sweep: had anything been released, it would be out by now
        assert await fed.events(".result.reported") == []
        assert (await fed.events(".job.succeeded"))[-1]["held"] is True
        # Preparing the data and the compatibility run were jobs too, each transition an event.
        jobs = await fed.jobs()
        assert [(j.kind, j.status) for j in jobs][:2] == [("prepare", "succeeded"), ("compatibility", "succeeded")]
        for earlier in jobs[:2]:
            events = [e for e in await fed.events("") if e.get("job_id") == earlier.id]
            assert any(e["type"] == "job.progress" for e in events)  # between its transitions
            history = [(e["type"], e.get("held")) for e in events if e["type"] != "job.progress"]
            done = [("job.queued", None), ("job.started", None), ("job.succeeded", False)]
            # The reference model's run is kept for the association; once approved it is held, and told.
            assert history == done + ([("job.succeeded", True)] if earlier.kind == "compatibility" else [])

        # The data owner's pending list (the console's) names both held results, the reference's too.
        reference = jobs[1].id

        async def both_pending() -> bool:
            held = (await fed.call("hospital-a", "get", "/console/pending"))["held_results"]
            return {h["id"] for h in held} == {job.id, reference}

        await eventually(both_pending, "both held results in the data owner's pending list")

        await operations.release_result(fed.uow(), fed.site, job.id)

        async def released() -> list[dict]:
            return [e for e in await fed.events(".result.reported") if e["model_id"] == model_id]

        await eventually(released, "the released result to leave the site")
        (result,) = await released()
        assert result["metrics"] == {"auc": 0.5}
        assert result["dataset_hash"] == job.dataset_hash and result["container_digests"]["model"] == busybox_image
        with pytest.raises(operations.NotPossible, match="no result waiting"):
            await operations.release_result(fed.uow(), fed.site, job.id)


async def test_a_running_job_is_cancelled_and_its_container_removed(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image, heartbeat_seconds=0.2) as fed:
        await fed.join()
        model_id = await fed.add_model("slow", "sleep 300; echo 1 > /out/p1")
        job = await fed.job_reaches(model_id, "running")

        async def heartbeat() -> dict | None:
            beat = await fed.heartbeat()
            return beat if beat and job.id in beat["running"] else None

        await eventually(heartbeat, "a heartbeat that names the running job")
        assert (await heartbeat())["draining"] is False  # type: ignore[index]
        engine = docker.from_env()

        def containers() -> list:
            # This site's job only (job ids repeat across sites); sparse: a listed container that
            # is removed meanwhile must not fail the listing.
            labels = [f"{JOB_LABEL}={job.id}", f"{SITE_LABEL}={SITE}"]
            return engine.containers.list(all=True, sparse=True, filters={"label": labels})

        await eventually(lambda: asyncio.to_thread(containers), "the model's container to start")
        await operations.cancel(fed.uow(), job.id)
        await fed.job_reaches(model_id, "cancelled")
        await eventually(lambda: asyncio.to_thread(lambda: not containers()), "its container to be removed")
        engine.close()
        cancelled = [e for e in await fed.events(".job.cancelled") if e["job_id"] == job.id]
        assert len(cancelled) == 1
        assert not [e for e in await fed.events(".result.reported") if e["model_id"] == model_id]
        with pytest.raises(operations.NotPossible, match="only queued or running"):
            await operations.cancel(fed.uow(), job.id)


async def test_model_failures_are_not_retried_and_partial_scores_are_flagged(
    tmp_path: Path, busybox_image: str
) -> None:
    async with federation(tmp_path, busybox_image, ignore_model_errors=True) as fed:
        await fed.join()
        broken = await fed.add_model("broken", "exit 3")
        partial = await fed.add_model("partial", "echo 1 > /out/p1; echo 2 > /out/p2; exit 4")
        failed = await fed.job_reaches(broken, "failed")
        assert (failed.failure, failed.attempts) == ("model", 1)
        (event,) = [e for e in await fed.events(".job.failed") if e["job_id"] == failed.id]
        assert event["failure"] == "model" and event["will_retry"] is False and "exited with 3" in event["reason"]

        done = await fed.job_reaches(partial, "succeeded")
        assert done.partial and done.metrics == {"auc": 0.9}

        async def reported() -> list[dict]:
            return [e for e in await fed.events(".result.reported") if e["model_id"] == partial]

        await eventually(reported, "the partial result")
        assert (await reported())[0]["partial"] is True


async def test_a_draining_site_keeps_jobs_queued_until_it_resumes(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        await operations.set_draining(fed.uow(), True)
        model_id = await fed.add_model("later", "echo 1 > /out/p1")
        await fed.job_reaches(model_id, "queued")
        await asyncio.sleep(2.5)  # two runner rounds
        assert (await fed.job_of_model(model_id)).status == "queued"  # type: ignore[union-attr]
        await operations.set_draining(fed.uow(), False)
        done = await fed.job_reaches(model_id, "succeeded")

        # Asked again, the same work is queued again; without asking it would not be.
        again = await operations.rerun(fed.uow(), fed.site, done.id)
        assert again.key == done.key and again.id != done.id
        # The runner polls the site's database, so the CLI's re-run needs no wake-up call.
        await eventually(lambda: _status(fed, again.id, "succeeded"), "the re-run to finish", timeout=60)
        await eventually(lambda: _count_results(fed, model_id, 2), "both runs' results to be reported")


async def _status(fed: Federation, job_id: int, status: str) -> bool:
    return any(j.id == job_id and j.status == status for j in await fed.jobs())


async def _count_results(fed: Federation, model_id: int, n: int) -> bool:
    return len([e for e in await fed.events(".result.reported") if e["model_id"] == model_id]) == n


async def test_the_site_runs_at_most_max_jobs_at_once(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image, max_jobs=1) as fed:
        await fed.join()
        first = await fed.add_model("one", "sleep 2; echo 1 > /out/p1")
        second = await fed.add_model("two", "sleep 2; echo 1 > /out/p1")
        a, b = await fed.job_reaches(first, "succeeded"), await fed.job_reaches(second, "succeeded")
        spans = sorted([(a.started_at, a.finished_at), (b.started_at, b.finished_at)])
        assert spans[0][1] <= spans[1][0], f"two jobs overlapped with max_jobs=1: {spans}"


async def test_an_infrastructure_failure_is_retried_later(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        missing = "sha256:" + "0" * 64  # no such image on this host: the site's problem, not the model's
        container = (
            await fed.call(
                "modeler",
                "post",
                "/containers",
                {"name": "gone", "spec": {**model(busybox_image), "image_digest": missing}, "state": "OPERATION"},
            )
        )["id"]
        model_id = await fed.register_and_associate("gone", container)

        async def first_failure() -> list[dict]:
            return [e for e in await fed.events(".job.failed") if e["model_id"] == model_id]

        await eventually(first_failure, "the first attempt to fail")
        (event,) = await first_failure()
        assert event["failure"] == "infrastructure" and event["will_retry"] is True
        assert "not present on this host" in event["reason"]
        job = await fed.job_of_model(model_id)
        assert job is not None and job.status == "queued" and job.attempts == 1
        assert job.not_before is not None and job.not_before > job.started_at  # type: ignore[operator]


async def test_the_committee_decides_who_sees_the_results(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        model_id = await fed.add_model("m2", "echo 1 > /out/p1; echo 2 > /out/p2")
        await fed.job_reaches(model_id, "succeeded")
        url = f"/benchmarks/{fed.benchmark_id}/leaderboard"

        async def on_board() -> dict | None:
            try:
                board = await fed.call("modeler", "get", url)
            except ApiError as exc:
                # The site finished, but the aggregator may not yet have projected the approvals that
                # show the benchmark (404 till then) and make the modeler a participant (403), nor
                # the result: until then the board is refused.
                if exc.status in (403, 404):
                    return None
                raise
            return board if board.get("yours") and board.get("rows") and len(board["rows"]) == 2 else None

        await eventually(on_board, "both models' results on the modeler's board")
        board = await on_board()
        assert board is not None and board["scope"] == "shared"  # the default: participants see the board
        assert [row["model"] for row in board["yours"]["rows"]] == ["m2"]
        with pytest.raises(ApiError, match="shares its results with the owners of its models and datasets"):
            await fed.call("stranger", "get", url)

        policy = {"visibility": "public", "granularity": "aggregate", "released": False}
        await fed.call("committee", "put", f"/benchmarks/{fed.benchmark_id}/sharing-policy", policy)
        held = await fed.call("stranger", "get", url)
        assert held["scope"] == "none" and "held" in held and held["yours"] is None
        assert (await fed.call("committee", "get", url))["scope"] == "committee"
        with pytest.raises(ApiError, match="only the benchmark's committee"):
            await fed.call("modeler", "put", f"/benchmarks/{fed.benchmark_id}/sharing-policy", {"released": True})

        await fed.call(
            "committee", "put", f"/benchmarks/{fed.benchmark_id}/sharing-policy", {**policy, "released": True}
        )
        public = await fed.call("stranger", "get", url)
        assert public["scope"] == "shared" and public["datasets"] == []
        assert all(row["per_dataset"] == {} for row in public["rows"])


async def test_the_leaderboard_rebuilt_from_the_history_equals_the_live_one(tmp_path: Path, busybox_image: str) -> None:
    async with federation(tmp_path, busybox_image) as fed:
        await fed.join()
        for name in ("m2", "m3"):
            await fed.job_reaches(await fed.add_model(name, "echo 1 > /out/p1; echo 2 > /out/p2"), "succeeded")
        url = f"/benchmarks/{fed.benchmark_id}/leaderboard"
        policy = {"visibility": "public", "granularity": "sites", "min_sites": 1}
        await fed.call("committee", "put", f"/benchmarks/{fed.benchmark_id}/sharing-policy", policy)

        async def live() -> dict | None:
            board = await fed.call("committee", "get", url)
            return board if len(board["rows"]) == 3 and board["policy"]["visibility"] == "public" else None

        await eventually(live, "all three models on the live board")
        # What `medperf provenance` shows of a model's results: each site's signed result and approvals.
        for row in (await fed.call("committee", "get", url))["rows"]:
            shown = await fed.call("committee", "provenance", fed.benchmark_id, row["model_id"])
            lines = provenance_table(shown).splitlines()
            approval = shown["model_association"]
            assert (approval is None) == row["baseline"]  # the reference model joins with its benchmark
            assert ("none approved" if row["baseline"] else f"approved by {approval['approved_by']}") in lines[0]
            assert [cell["site"] for cell in shown["cells"]] == [SITE]
            assert shown["cells"][0]["key_id"] in lines[3] and lines[3].startswith(SITE)
        rebuilt_db = f"sqlite:///{tmp_path / 'rebuilt.db'}"
        applied = await rebuild(fed.nats_url, rebuilt_db)
        assert applied >= 3 + 3 + 2  # at least the registrations, three results and the approvals

        db = Database(rebuilt_db)
        try:
            for viewer in (("committee", False), ("modeler", False), ("stranger", False), ("root", True)):
                query = GetLeaderboard(actor=viewer[0], is_admin=viewer[1], benchmark_id=fed.benchmark_id)
                rebuilt = (await get_leaderboard(query, UnitOfWork(db, TABLES), Boards())).data
                assert rebuilt == await fed.call(viewer[0] if viewer[0] != "root" else "admin", "get", url)
        finally:
            await db.dispose()
