"""The demo: the whole benchmarking flow on real breast-cancer data, three hospitals, three models.

Everything real: an embedded nats-server with JetStream, one database per service, Docker
containers with the network off, assets downloaded over HTTP from a local file host and verified
by sha256. Only the people are simulated, each by their own API token.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker

from cli.client import Client
from cli.render import leaderboard_table
from cli.stack import Stack
from examples.breast_cancer.assets import MODELS, SITES, build_demo_assets
from examples.breast_cancer.images import default_cache_dir, ensure_demo_images
from examples.breast_cancer.specs import container_specs
from services.executor.runtime import DockerRuntime, EngineUnavailable
from services.executor.settings import LocalDataset, SiteSettings
from services.ingress.auth import token_digest
from shared.settings import Settings

BENCHMARK = "breast-cancer-diagnosis"
USERS = ("admin", "committee", "owner-a", "owner-b", "owner-c", "nb-lab", "tree-lab")
SITE_OWNERS = dict(zip(SITES, ("owner-a", "owner-b", "owner-c"), strict=True))
#: The two non-reference models and who owns them; the second arrives after results are in.
CANDIDATES = (("gaussian_nb", "nb-lab"), ("decision_tree", "tree-lab"))


@dataclass
class DemoResult:
    benchmark_id: int
    leaderboard: dict
    stack: Stack
    tokens: dict[str, str]


@contextmanager
def file_host(root: Path):  # type: ignore[no-untyped-def]
    """Serve ``root`` over HTTP on loopback, as a stand-in for any direct-download host."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def wait_until(check: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


async def run_demo(
    settings: Settings, say: Callable[[str], None] = print, keep: Callable[[DemoResult], Any] | None = None
) -> dict:
    """Run the flow end to end and return the final leaderboard. ``keep`` is called with the live
    stack before it shuts down (tests use it to look further)."""
    import asyncio

    state = settings.state_dir.resolve()
    try:
        runtime = DockerRuntime.from_env()
    except EngineUnavailable as exc:
        raise SystemExit(
            f'{exc}\nThe demo runs its containers in Docker: `eval "$(scripts/start-dockerd)"` starts one.'
        ) from exc

    say("1/7 building the demo's data, weights and images (real data: 569 breast-cancer cases from scikit-learn)")
    assets = await asyncio.to_thread(build_demo_assets, state / "demo-assets")
    images = await asyncio.to_thread(ensure_demo_images, docker.from_env(), default_cache_dir(), say)

    tokens = {user: secrets.token_urlsafe(24) for user in USERS}
    settings = settings.model_copy(
        update={
            "api_token_digests": {token_digest(t): u for u, t in tokens.items()},
            "admins": ["admin"],
            "http_port": 0,
        }
    )
    sites = [
        SiteSettings(
            name=site,
            owner=SITE_OWNERS[site],
            work_dir=state / "sites" / site,
            datasets=[
                LocalDataset(
                    name=f"{site}-breast",
                    benchmark=BENCHMARK,
                    data_path=assets.sites[site].data_path,
                    labels_path=assets.sites[site].labels_path,
                )
            ],
        )
        for site in SITES
    ]
    committee_site = SiteSettings(
        name="committee", owner="committee", work_dir=state / "sites" / "committee", committee_for=[BENCHMARK]
    )
    with file_host(assets.root / "hosted") as base_url:
        async with Stack(settings, sites=[*sites, committee_site], runtime=runtime) as stack:
            assert stack.ingress is not None
            clients = {user: Client(stack.ingress.url, token) for user, token in tokens.items()}
            try:
                board = await asyncio.to_thread(
                    _flow, clients, container_specs(images, base_url, assets), base_url, assets, say
                )
                if keep is not None:
                    await keep(DemoResult(board["benchmark_id"], board, stack, tokens))
            finally:
                for client in clients.values():
                    client.close()
    return board


def _flow(
    clients: dict[str, Client], specs: dict[str, dict], base_url: str, assets: Any, say: Callable[[str], None]
) -> dict:
    committee, admin = clients["committee"], clients["admin"]
    say("2/7 committee registers the data preparator, reference model and metrics containers")
    prep = _register_container(committee, "bc-data-preparator", specs["prep"])
    metrics = _register_container(committee, "bc-metrics", specs["metrics"])
    reference = _register_model(committee, "logistic-regression", specs[MODELS[0]])
    demo = assets.hosted["demo-dataset.tar.gz"]
    benchmark = committee.submit_benchmark(
        name=BENCHMARK,
        description="Malignant vs benign from fine-needle aspirate features (WDBC).",
        data_preparator_id=prep,
        reference_model_id=reference,
        metrics_container_id=metrics,
        demo_dataset={"source": f"{base_url}/demo-dataset.tar.gz", "sha256": demo.sha256},
        metrics=[{"name": n} for n in ("auc", "accuracy", "sensitivity", "specificity")],
        primary_metric="auc",
        state="OPERATION",
    )
    say(f"3/7 admin approves benchmark {benchmark}; the three hospital agents prepare their data")
    admin.decide_benchmark(benchmark, approve=True, reason="complete and well documented")

    pending = wait_until(
        lambda: (
            len(found := committee.associations(benchmark, kind="dataset", status="PENDING")) == len(SITES) and found
        ),
        "three dataset association requests",
    )
    say(
        "4/7 committee approves each hospital (compatibility test: "
        + ", ".join(f"AUC {a['compatibility']['metrics']['auc']:.3f}" for a in pending)
        + ")"
    )
    for association in pending:
        committee.decide_association(benchmark, "dataset", association["component_id"], approve=True)

    models = {}
    for step, (model_name, owner) in enumerate(CANDIDATES):
        client = clients[owner]
        say(
            f"{5 + step}/7 {owner} registers {model_name} and asks to join; the committee's agent tests it on demo data"
        )
        model = _register_model(client, model_name.replace("_", "-"), specs[model_name])
        client.request_association(benchmark, "model", model)
        wait_until(
            lambda m=model: any(
                a["component_id"] == m and a["compatibility"] for a in committee.associations(benchmark, kind="model")
            ),
            f"the compatibility test of {model_name}",
        )
        committee.decide_association(benchmark, "model", model, approve=True, reason="passed on the demo data")
        models[model_name] = model
        expected = 1 + len(models)
        wait_until(
            lambda n=expected: _complete(committee.leaderboard(benchmark), n, len(SITES)),
            f"results of {expected} models from {len(SITES)} sites",
        )
    board = committee.leaderboard(benchmark)
    say("7/7 every site ran every approved model; only metrics left the sites\n")
    say(leaderboard_table(board))
    return board


# Everything the demo registers is final (MedPerf's --operational): only operational datasets and
# models may join a benchmark.
def _register_container(client: Client, name: str, spec: dict) -> int:
    return client.post("/containers", {"name": name, "spec": spec, "state": "OPERATION"})["id"]


def _register_model(client: Client, name: str, spec: dict) -> int:
    container = _register_container(client, f"{name}-container", spec)
    return client.post("/models", {"name": name, "container_id": container, "state": "OPERATION"})["id"]


def _complete(board: dict, models: int, sites: int) -> bool:
    return (
        len(board["rows"]) == models and len(board["datasets"]) == sites and all(r["complete"] for r in board["rows"])
    )
