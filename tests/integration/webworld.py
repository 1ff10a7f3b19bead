"""A federation with a little of everything, for the web app's browser tests: three hospitals (one
reviews its results before they leave), a benchmark with two approved models (one crashes at every
site), a third model from another owner waiting for the committee with its signed test, and a
second benchmark waiting for an admin. Each hospital's data gives its own scores, so the board,
the chart and the heatmap have something to show."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sites import Federation, site_settings, task
from users import central_settings
from waiting import eventually

from cli.client import Client
from cli.stack import Stack

TOKENS = {
    "admin": "t-admin",
    "committee": "t-committee",
    "modeler": "t-modeler",
    "modeler-2": "t-modeler-2",
    "hospital-a": "t-hospital-a",
    "hospital-b": "t-hospital-b",
    "hospital-c": "t-hospital-c",
}
SITES = {"site-a": "hospital-a", "site-b": "hospital-b", "site-c": "hospital-c"}
REVIEWING = "site-b"
BENCHMARK = "tumour-screening"  # its data owner releases each result


def container(image: str, tasks: dict) -> dict:
    return {"image": "localhost/busybox", "image_digest": image, "tasks": tasks}


def preparator(image: str) -> dict:
    return container(
        image,
        {
            "prepare": task(
                "cp -r /in/data/. /out/data/ && cp -r /in/labels/. /out/labels/",
                {"data_path": "/in/data", "labels_path": "/in/labels"},
                {"output_path": "/out/data", "output_labels_path": "/out/labels"},
            ),
            "sanity_check": task("true"),
            "statistics": task("echo '{\"cases\": 40}' > /out/statistics.json", outputs={"output_path": "/out"}),
        },
    )


def model(image: str, digit: int) -> dict:
    """Scores 0.8<site><digit>: each site's number is in its data."""
    script = f"cat /in/case1.txt > /out/p1; echo {digit} > /out/p2"
    return container(image, {"infer": task(script, {"data_path": "/in"}, {"output_path": "/out"})})


def slow(image: str, seconds: int) -> dict:
    """Takes ``seconds`` to predict: long enough to be seen running."""
    script = f"sleep {seconds}; cat /in/case1.txt > /out/p1; echo 3 > /out/p2"
    return container(image, {"infer": task(script, {"data_path": "/in"}, {"output_path": "/out"})})


def crashing(image: str) -> dict:
    script = "echo 'loading weights'; echo 'weights file is truncated' >&2; exit 3"
    return container(image, {"infer": task(script, {"data_path": "/in"}, {"output_path": "/out"})})


def metrics(image: str) -> dict:
    script = 'echo "{\\"auc\\": 0.8$(cat /p/p1)$(cat /p/p2)}" > /out/results.json'
    return container(image, {"evaluate": task(script, {"predictions": "/p", "labels": "/l"}, {"output_path": "/out"})})


@dataclass
class World:
    url: str
    fed: Federation
    benchmark_id: int
    pending_benchmark_id: int
    models: dict[str, int]

    async def call(self, user: str, method: str, *args: object, **kwargs: object) -> object:
        return await self.fed.call(user, method, *args, **kwargs)


async def _post(fed: Federation, user: str, path: str, body: dict) -> int:
    return (await fed.call(user, "post", path, body))["id"]


async def _ask_to_join(fed: Federation, user: str, model_id: int) -> None:
    report = await fed.signed_test(user, "model", model_id)
    body = {"kind": "model", "component_id": model_id, "compatibility": report}

    async def asked() -> bool:
        try:  # the approvals service learns of the model from an event
            await fed.call(user, "post", f"/benchmarks/{fed.benchmark_id}/associations", body)
            return True
        except Exception:
            return False

    await eventually(asked, f"model {model_id}'s request to be accepted", timeout=30, interval=0.1)


async def add_model(w: World, user: str, name: str, spec: dict) -> int:
    """``user`` registers a model and asks to join with a signed, passing test; nobody decides yet."""
    w.models[name] = await _model(w.fed, user, name, spec)
    await _ask_to_join(w.fed, user, w.models[name])
    return w.models[name]


async def _model(fed: Federation, user: str, name: str, spec: dict) -> int:
    container_id = await _post(fed, user, "/containers", {"name": f"{name}-image", "spec": spec, "state": "OPERATION"})
    return await _post(fed, user, "/models", {"name": name, "container_id": container_id, "state": "OPERATION"})


async def build(fed: Federation) -> tuple[int, dict[str, int]]:
    """The benchmark, its three hospitals' datasets, two approved models and one waiting."""
    image = fed.image
    prep = await _post(
        fed, "committee", "/containers", {"name": "prep", "spec": preparator(image), "state": "OPERATION"}
    )
    scorer = await _post(fed, "committee", "/containers", {"name": "auc", "spec": metrics(image), "state": "OPERATION"})
    reference = await _model(fed, "committee", "reference", model(image, 5))
    fed.benchmark_id = await fed.call(
        "committee",
        "submit_benchmark",
        name=BENCHMARK,
        description="screening on three hospitals' scans",
        data_preparator_id=prep,
        reference_model_id=reference,
        metrics_container_id=scorer,
        demo_dataset={"source": "https://example.org/demo.tgz", "sha256": "ab" * 32},
        metrics=[{"name": "auc"}],
        primary_metric="auc",
        state="OPERATION",
    )
    await fed.call("admin", "decide_benchmark", fed.benchmark_id, approve=True)

    async def datasets_asked() -> bool:
        asked = await fed.call("committee", "associations", fed.benchmark_id, kind="dataset", status="PENDING")
        for item in asked:
            await fed.call("committee", "decide_association", fed.benchmark_id, "dataset", item["component_id"], True)
        approved = await fed.call("committee", "associations", fed.benchmark_id, kind="dataset", status="APPROVED")
        return len(approved) == len(SITES)

    await eventually(datasets_asked, "every hospital's dataset approved", timeout=90, interval=0.2)
    models = {"reference": reference}
    for name, spec in (("good-model", model(image, 9)), ("crashing-model", crashing(image))):
        models[name] = await _model(fed, "modeler", name, spec)
        await _ask_to_join(fed, "modeler", models[name])
        await fed.call("committee", "decide_association", fed.benchmark_id, "model", models[name], approve=True)
    models["waiting-model"] = await _model(fed, "modeler-2", "waiting-model", model(image, 1))
    await _ask_to_join(fed, "modeler-2", models["waiting-model"])
    return fed.benchmark_id, models


@asynccontextmanager
async def world(tmp_path: Path, image: str) -> AsyncIterator[World]:
    settings = central_settings(tmp_path / "state", TOKENS)
    sites = []
    for number, (name, owner) in enumerate(SITES.items(), start=2):
        site = site_settings(
            tmp_path / name,
            name=name,
            owner=owner,
            heartbeat_seconds=0.5,
            release="review" if name == REVIEWING else "auto",
        )
        (site.datasets[0].data_path / "case1.txt").write_text(f"{number}\n")
        scans = site.datasets[0].model_copy(update={"name": f"{name}-scans", "benchmark": BENCHMARK})
        sites.append(site.model_copy(update={"datasets": [scans]}))
    async with Stack(settings, sites=sites) as stack:
        assert stack.ingress and stack.settings.nats_url
        clients = {u: Client(stack.ingress.url, t) for u, t in TOKENS.items()}
        try:
            fed = Federation(
                stack.settings.nats_url, clients, image, sites[0], stack.hosts["site-site-a"].uow, stack=stack
            )
            benchmark_id, models = await build(fed)
            pending = await _second_benchmark(fed)
            yield World(stack.ingress.url, fed, benchmark_id, pending, models)
        finally:
            for client in clients.values():
                client.close()


async def _second_benchmark(fed: Federation) -> int:
    """A benchmark the committee submitted that waits for an admin."""
    first = await fed.call("committee", "get", f"/benchmarks/{fed.benchmark_id}")
    body = {
        key: first[key]
        for key in ("data_preparator_id", "reference_model_id", "metrics_container_id", "demo_dataset", "metrics")
    }
    return await _post(
        fed,
        "committee",
        "/benchmarks",
        {**body, "name": "lesion-segmentation", "primary_metric": "auc", "state": "OPERATION"},
    )


async def settle(w: World) -> None:
    """Every approved model has run at every site (the crashing one failed for good)."""

    async def done() -> bool:
        jobs = await w.call("admin", "get", "/console/jobs", limit=1000)
        runs = [
            j
            for j in jobs
            if j["kind"] == "run" and j["model_id"] in (w.models["good-model"], w.models["crashing-model"])
        ]
        finished = [j for j in runs if j["status"] in ("succeeded", "failed") and not j.get("will_retry")]
        return len(finished) >= 2 * len(SITES)

    await eventually(done, "both models to finish at every site", timeout=180, interval=0.5)
    await asyncio.sleep(0)
