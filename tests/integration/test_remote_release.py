"""A data owner gives consent from the web: the ingress relays the release of held results, or of a
failed job's log tail, to the site's own agent, which alone acts. Real nats-server with the
generated permissions (the agent on its own credentials), the real services, Docker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from secured import SecuredNats
from sites import SITE, USERS, Federation, preparator, site_settings
from users import central_settings
from waiting import eventually

from cli.client import ApiError, Client
from cli.stack import Stack
from services.executor.app import create_agent
from services.executor.settings import SiteSettings
from shared.nats_config import site_user
from shared.service import ServiceHost
from shared.settings import Settings

pytestmark = pytest.mark.engine

RELEASE = f"/sites/{SITE}/held-results/release"


class SecuredFederation(Federation):
    agent: ServiceHost
    agent_settings: Settings

    async def restart_agent(self, site: SiteSettings | None) -> None:
        """Stop the agent; start it again with ``site`` (None: leave it stopped)."""
        await self.agent.stop()
        if site is not None:
            self.agent = create_agent(self.agent_settings, site)
            await self.agent.start()
            self.uow = self.agent.uow

    async def refused(self, user: str, path: str, body: dict | None = None) -> tuple[int, str]:
        try:
            answer = await self.call(user, "post", path, body or {})
        except ApiError as exc:
            return exc.status, exc.message
        raise AssertionError(f"{user} POST {path} was accepted: {answer}")

    async def held(self) -> set[int]:
        return {job.id for job in await self.jobs() if job.release == "held"}

    async def board(self) -> set[int]:
        rows = (await self.call("committee", "get", f"/benchmarks/{self.benchmark_id}/leaderboard")).get("rows")
        return {row["model_id"] for row in rows or []}


@asynccontextmanager
async def secured_federation(tmp_path: Path, image: str) -> AsyncIterator[SecuredFederation]:
    with SecuredNats(tmp_path / "nats", sites=(SITE, "site-b")) as servers:
        credentials = {"nats_user": "central", "nats_password": servers.passwords["central"]}
        settings = central_settings(tmp_path / "state", USERS, nats_url=servers.url, **credentials)
        agent_settings = settings.model_copy(
            update={"nats_user": site_user(SITE), "nats_password": servers.passwords[site_user(SITE)]}
        )
        site = site_settings(tmp_path, release="review")
        async with Stack(settings) as stack:
            assert stack.ingress
            agent = create_agent(agent_settings, site)
            await agent.start()
            clients = {u: Client(stack.ingress.url, t) for u, t in USERS.items()}
            operator_url = servers.url.replace("nats://", f"nats://operator:{servers.passwords['operator']}@")
            fed = SecuredFederation(operator_url, clients, image, site, agent.uow)
            fed.agent, fed.agent_settings = agent, agent_settings
            try:
                yield fed
            finally:
                for client in clients.values():
                    client.close()
                await fed.agent.stop()


async def test_the_data_owner_releases_held_results_and_a_log_tail_from_the_web(
    tmp_path: Path, busybox_image: str
) -> None:
    async with secured_federation(tmp_path, busybox_image) as fed:
        await fed.join()
        reference = (await fed.jobs())[1]  # the reference model's compatibility run, held once approved
        model_id = await fed.add_model("m2", "echo 1 > /out/p1")
        job = await fed.job_reaches(model_id, "succeeded")
        await eventually(lambda: _has(fed.held(), {job.id, reference.id}), "both results held at the site")

        # Nobody but the site's data owner: not another user, not the committee, not an admin.
        for user in ("stranger", "committee", "modeler", "admin"):
            status, message = await fed.refused(user, RELEASE, {"job_ids": [job.id]})
            assert status == 403 and f"belongs to {fed.site.owner}" in message, (user, status, message)
        status, message = await fed.refused("hospital-a", "/sites/nowhere/held-results/release", {"all": True})
        assert (status, message) == (404, "no site nowhere")
        assert await fed.held() == {job.id, reference.id} and await fed.events(".result.reported") == []

        # The data owner releases one, as their pending list says: it leaves the site, signed, and
        # reaches the leaderboard.
        async def pending() -> list[dict]:
            held = (await fed.call("hospital-a", "get", "/console/pending"))["held_results"]
            return [item["release"] for item in held if item["id"] == job.id]

        await eventually(pending, "the held result in the data owner's pending list")
        (release,) = await pending()
        assert release == {"method": "POST", "path": RELEASE, "body": {"job_ids": [job.id]}}
        answer = await fed.call("hospital-a", "post", release["path"], release["body"])
        assert answer == {
            "site": SITE,
            "released": [
                {
                    "job_id": job.id,
                    "benchmark_id": fed.benchmark_id,
                    "model_id": model_id,
                    "dataset_id": job.dataset_id,
                    "metrics": {"auc": 0.5},
                    "partial": False,
                }
            ],
        }
        await eventually(lambda: _has(fed.board(), {model_id}), "the released result on the leaderboard")
        assert await fed.held() == {reference.id}
        # Nothing held any more, or no such job: said so, and nothing else is released with it.
        status, message = await fed.refused("hospital-a", RELEASE, {"job_ids": [reference.id, job.id]})
        assert status == 409 and f"job {job.id} has no result waiting for release" in message
        assert await fed.refused("hospital-a", RELEASE, {"job_ids": [999]}) == (
            404,
            "no job 999 at this site (see `medperf job ls`)",
        )
        status, message = await fed.refused("hospital-a", RELEASE, {"job_ids": [job.id], "all": True})
        assert status == 422 and "job_ids" in message
        assert await fed.held() == {reference.id}

        # "all" releases the rest; then there is nothing left to release.
        answer = await fed.call("hospital-a", "post", RELEASE, {"all": True})
        assert [r["job_id"] for r in answer["released"]] == [reference.id]
        assert await fed.call("hospital-a", "post", RELEASE, {"all": True}) == {"site": SITE, "released": []}
        reference_model = reference.model_id
        await eventually(lambda: _has(fed.board(), {model_id, reference_model}), "both results on the board")

        # A failed job's log tail stays at the site until its data owner releases it from the web.
        leaky = await fed.add_model("leaky", "echo 'case 17: age 54' >&2; exit 3")
        failed = await fed.job_reaches(leaky, "failed")
        log_release = f"/sites/{SITE}/jobs/{failed.id}/log-release"

        async def failure_told() -> list[dict]:
            rows = await fed.call("modeler", "console_jobs")
            return [j for j in rows if j["job_id"] == failed.id and j["status"] == "failed"]

        await eventually(failure_told, "the failure to reach the model's owner")
        (row,) = await failure_told()
        assert row["log_tail"] == "" and row["log_tail_kept_at_site"] is True
        for user in ("modeler", "committee", "admin"):
            assert (await fed.refused(user, log_release))[0] == 403
        status, message = await fed.refused("hospital-a", f"/sites/{SITE}/jobs/{job.id}/log-release")
        assert status == 409 and "only a failed job's log tail is released" in message
        answer = await fed.call("hospital-a", "post", log_release, {})
        assert answer["site"] == SITE and answer["job_id"] == failed.id and answer["lines"] >= 1

        async def tail_released() -> bool:
            rows = await fed.call("modeler", "console_jobs")
            return any(j["job_id"] == failed.id and "case 17: age 54" in j["log_tail"] for j in rows)

        await eventually(tail_released, "the released tail to reach the model's owner")

        # The agent offline: the ingress says so, and that retrying later works.
        await fed.restart_agent(None)
        status, message = await fed.refused("hospital-a", RELEASE, {"all": True})
        assert status == 503 and message == (
            f"the site's agent at {SITE} is not answering; it acts when it is back online — retry then"
        )
        # Back, but its site takes consent only on its own machine: a refusal naming the setting.
        await fed.restart_agent(fed.site.model_copy(update={"remote_release": False}))
        status, message = await fed.refused("hospital-a", RELEASE, {"all": True})
        assert status == 403 and "MEDPERF_SITE_REMOTE_RELEASE=false" in message
        assert "medperf result release" in message
        status, message = await fed.refused("hospital-a", log_release)
        assert status == 403 and "MEDPERF_SITE_REMOTE_RELEASE=false" in message


async def _has(values: Any, expected: set[int]) -> bool:
    return expected <= await values


async def test_nobody_joins_a_site_by_naming_it_in_a_dataset(tmp_path: Path, busybox_image: str) -> None:
    """The site's agent registers its key as its owner at start; from then on a stranger's dataset
    naming the site is refused, so they never pass the registry's ownership check (and the agent
    would refuse them still: ``consent.refusal``, tests/unit/test_consent.py)."""
    async with secured_federation(tmp_path, busybox_image) as fed:

        async def key_registered() -> bool:
            return bool(await fed.call("hospital-a", "get", f"/sites/{SITE}/keys"))

        await eventually(key_registered, "the agent's signing key in the registry")
        dataset = {
            "name": "claim",
            "site": SITE,
            "data_preparator_id": await _container(fed),
            "input_hash": "1" * 64,
            "prepared_hash": "2" * 64,
            "statistics": {"cases": 1},
        }
        status, message = await fed.refused("stranger", "/datasets", dataset)
        assert status == 403 and f"site {SITE!r} belongs to hospital-a" in message
        status, _ = await fed.refused("stranger", RELEASE, {"all": True})
        assert status == 403
        assert await fed.call("hospital-a", "post", RELEASE, {"all": True}) == {"site": SITE, "released": []}


async def _container(fed: Federation) -> int:
    body = {"name": "prep", "spec": preparator(fed.image), "state": "OPERATION"}
    return (await fed.call("stranger", "post", "/containers", body))["id"]
