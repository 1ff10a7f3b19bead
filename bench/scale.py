"""How the federation's cost grows with sites and models.

For each number of sites (10, 100, 300) a fresh federation starts: an embedded nats-server and the
registry, approvals and aggregator as separate OS processes (``medperf serve X``, SQLite each), so
CPU and memory are measured per service. The sites are simulated in this process: each has its own
durable pull consumer of ``AssociationApproved`` (as a real agent), "runs" an approved model at
once (no container: a fake score) and publishes ``ResultReported`` on its own subject with
``Nats-Msg-Id``, through the real broker into the real aggregator. Then three benchmarks are
submitted with 1, 10 and 50 models each; every model is registered, asks to join and is approved
by the committee, and the clock runs from each approval until every site has started it, and until
the leaderboard (the aggregator's query, as the committee sees it) holds every site's result.

Run: .venv/bin/python bench/scale.py [--sites 10 100 300] [--models 1 10 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

# Run as a script, Python would import the installed package rather than this checkout's.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import psutil
from nats.js.api import ConsumerConfig

from shared.broker import EmbeddedNats, ensure_streams
from shared.commands import (
    Command,
    DecideAssociation,
    DecideBenchmark,
    GetLeaderboard,
    Outcome,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    RegisterSiteKey,
    RequestAssociation,
    SubmitBenchmark,
)
from shared.events import AssociationApproved, CompatibilityReport, ResultReported
from shared.signing import SiteKey
from shared.streams import ALL_STREAMS

SERVICES = ("registry", "approvals", "aggregator")
DIGEST = "sha256:" + "ab" * 32


class Federation:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nats = EmbeddedNats(root / "nats")
        self.processes: dict[str, psutil.Popen] = {}

    async def start(self) -> str:
        url = self.nats.start()
        await ensure_streams(url)
        env = {**os.environ, "MEDPERF_NATS_URL": url, "MEDPERF_STATE_DIR": str(self.root / "state")}
        env["MEDPERF_ADMINS"] = '["admin"]'
        for service in SERVICES:
            log = (self.root / f"{service}.log").open("ab")
            self.processes[service] = psutil.Popen(
                [sys.executable, "-m", "cli.main", "serve", service], env=env, stdout=log, stderr=log
            )
        self.processes["nats-server"] = psutil.Process(self.nats.process.pid)  # type: ignore[union-attr]
        return url

    def stop(self) -> None:
        for name, process in self.processes.items():
            if name != "nats-server":
                process.terminate()
                process.wait(30)
        self.nats.stop()

    def usage(self) -> dict[str, tuple[float, float]]:
        """CPU seconds so far and RSS (MiB) of each process, this one (the simulated sites) included."""
        found = {}
        for name, process in {**self.processes, "sites+driver": psutil.Process()}.items():
            cpu = process.cpu_times()
            found[name] = (cpu.user + cpu.system, process.memory_info().rss / 2**20)
        return found


async def ask(nc: nats.NATS, command: Command, retries: int = 100) -> Outcome:
    """A command, retried while the service has not yet heard of what it refers to."""
    for _ in range(retries):
        try:
            reply = await nc.request(command.subject(), command.model_dump_json().encode(), timeout=30)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.2)  # the service is still starting
            continue
        outcome = Outcome.model_validate_json(reply.data)
        if outcome.ok:
            return outcome
        if outcome.code not in ("not_found", "conflict", "forbidden", "unavailable"):
            raise RuntimeError(f"{type(command).__name__} refused: {outcome.reason}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{type(command).__name__} refused: {outcome.reason}")


class SimulatedSites:
    """``n`` sites, each with its own durable consumer; they record when they started each model."""

    def __init__(self, nc: nats.NATS, n: int, dataset_ids: list[int]) -> None:
        self.nc, self.js = nc, nc.jetstream()
        self.sites = [f"sim-{i:03d}" for i in range(n)]
        self.dataset_ids = dataset_ids
        self.started: dict[int, list[float]] = defaultdict(list)
        self.tasks: list[asyncio.Task[None]] = []
        # Each site signs its results and registers its key, as an agent does at start.
        self.keys = {site: SiteKey.generate() for site in self.sites}

    async def start(self) -> None:
        for site, dataset_id in zip(self.sites, self.dataset_ids, strict=True):
            key = RegisterSiteKey(actor=f"owner-{site}", site=site, public_key=self.keys[site].public_key)
            await ask(self.nc, key)
            durable = f"site-{site}-association-approved"
            sub = await self.js.pull_subscribe(
                AssociationApproved.subscription(),
                durable=durable,
                stream="APPROVALS",
                config=ConsumerConfig(ack_wait=60, max_ack_pending=256),
            )
            self.tasks.append(asyncio.create_task(self._run(site, dataset_id, sub)))

    async def _run(self, site: str, dataset_id: int, sub: object) -> None:
        while True:
            try:
                messages = await sub.fetch(32, timeout=2)  # type: ignore[attr-defined]
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for message in messages:
                event = AssociationApproved.model_validate_json(message.data)
                if event.kind == "model":
                    self.started[event.component_id].append(time.monotonic())
                    result = self.keys[site].sign_result(
                        ResultReported(
                            site=site,
                            actor=f"owner-{site}",
                            benchmark_id=event.benchmark_id,
                            model_id=event.component_id,
                            dataset_id=dataset_id,
                            metrics={"auc": random.random()},
                            container_digests={"model": DIGEST, "metrics": DIGEST},
                            dataset_hash="cd" * 32,
                        )
                    )
                    await self.js.publish(
                        result.subject, result.model_dump_json().encode(), headers={"Nats-Msg-Id": str(result.event_id)}
                    )
                await message.ack()

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def stream_total(js: object) -> int:
    return sum([(await js.stream_info(s.name)).state.messages for s in ALL_STREAMS])  # type: ignore[attr-defined]


async def benchmark_with_models(nc: nats.NATS, name: str, ids: dict[str, int], models: int, sites: SimulatedSites):
    spec = {"image": "localhost/bench:1", "image_digest": DIGEST, "tasks": {"infer": {"command": ["run"]}}}
    bench = await ask(
        nc,
        SubmitBenchmark(
            actor="committee",
            name=name,
            data_preparator_id=ids["prep"],
            reference_model_id=ids["ref"],
            metrics_container_id=ids["metrics"],
            demo_dataset={"source": "https://example.org/demo.tgz", "sha256": "ab" * 32},
            metrics=[{"name": "auc"}],
            primary_metric="auc",
            state="OPERATION",
        ),
    )
    benchmark_id = bench.id
    assert benchmark_id is not None
    await ask(nc, DecideBenchmark(actor="admin", is_admin=True, benchmark_id=benchmark_id, approve=True))
    model_ids = []
    for i in range(models):
        container = await ask(nc, RegisterContainer(actor="modeler", name=f"{name}-c{i}", spec=spec, state="OPERATION"))
        model = await ask(
            nc, RegisterModel(actor="modeler", name=f"{name}-m{i}", container_id=container.id, state="OPERATION")
        )
        model_ids.append(model.id)
    js = nc.jetstream()
    events_before, usage_before = await stream_total(js), None
    approved: dict[int, float] = {}
    board: dict[int, float] = {}
    usage_before = FED.usage()
    t0 = time.monotonic()
    # Only a signed test counts: the model owner's own key, registered at their workstation.
    owner_key = SiteKey.generate()
    await ask(nc, RegisterSiteKey(actor="modeler", site="ws-modeler", public_key=owner_key.public_key))
    for model_id in model_ids:
        tested = CompatibilityReport(passed=True, benchmark_id=benchmark_id, kind="model", component_id=model_id)
        report = owner_key.sign_report(tested, "ws-modeler")
        await ask(
            nc,
            RequestAssociation(
                actor="modeler", benchmark_id=benchmark_id, kind="model", component_id=model_id, compatibility=report
            ),
        )
        await ask(
            nc,
            DecideAssociation(
                actor="committee", benchmark_id=benchmark_id, kind="model", component_id=model_id, approve=True
            ),
        )
        approved[model_id] = time.monotonic()
    n = len(sites.sites)
    while len(board) < models:
        outcome = await ask(nc, GetLeaderboard(actor="committee", benchmark_id=benchmark_id))
        now = time.monotonic()
        for row in outcome.data.get("rows") or []:
            if row.get("model_id") in approved and row["model_id"] not in board and row["datasets_reported"] >= n:
                board[row["model_id"]] = now
        await asyncio.sleep(0.2)
    wall = time.monotonic() - t0
    usage_after = FED.usage()
    events = await stream_total(js) - events_before
    started = max(max(sites.started[m]) - approved[m] for m in model_ids)
    assert all(len(sites.started[m]) == n for m in model_ids), "a site missed an approval"
    on_board = max(board[m] - approved[m] for m in model_ids)
    cpu = {k: usage_after[k][0] - usage_before[k][0] for k in usage_after}
    rss = {k: usage_after[k][1] for k in usage_after}
    return started, on_board, events / wall, cpu, rss, wall, models * n


FED: Federation


async def run_size(n_sites: int, model_counts: list[int]) -> list[dict]:
    global FED
    rows = []
    with tempfile.TemporaryDirectory(prefix="medperf-scale-") as tmp:
        FED = Federation(Path(tmp))
        url = await FED.start()
        nc = await nats.connect(url)
        sites: SimulatedSites | None = None
        try:
            ids = {}
            roles = {"prep": ("prepare", "sanity_check", "statistics"), "ref-c": ("infer",), "metrics": ("evaluate",)}
            for role, tasks in roles.items():
                spec = {
                    "image": "localhost/bench:1",
                    "image_digest": DIGEST,
                    "tasks": {t: {"command": ["run"]} for t in tasks},
                }
                ids[role] = (
                    await ask(nc, RegisterContainer(actor="committee", name=role, spec=spec, state="OPERATION"))
                ).id
            ids["ref"] = (
                await ask(
                    nc, RegisterModel(actor="committee", name="ref", container_id=ids["ref-c"], state="OPERATION")
                )
            ).id
            dataset_ids = []
            for i in range(n_sites):
                outcome = await ask(
                    nc,
                    RegisterDataset(
                        actor=f"owner-sim-{i:03d}",
                        name=f"d{i}",
                        site=f"sim-{i:03d}",
                        data_preparator_id=ids["prep"],
                        input_hash=f"{i:064x}",
                        prepared_hash=f"{i + 1:064x}",
                        statistics={"cases": 100},
                    ),
                )
                dataset_ids.append(outcome.id)
            sites = SimulatedSites(nc, n_sites, dataset_ids)
            await sites.start()
            for models in model_counts:
                started, on_board, rate, cpu, rss, wall, results = await benchmark_with_models(
                    nc, f"b{models}", ids, models, sites
                )
                row = {
                    "sites": n_sites,
                    "models": models,
                    "results": results,
                    "all_started_s": started,
                    "on_board_s": on_board,
                    "wall_s": wall,
                    "events_per_s": rate,
                    "cpu_s": cpu,
                    "rss_mib": rss,
                }
                rows.append(row)
                print_row(row)
        finally:
            if sites:
                await sites.stop()
            await nc.close()
            FED.stop()
    return rows


def print_row(row: dict) -> None:
    cpu = " ".join(f"{k}={v:.1f}s" for k, v in row["cpu_s"].items())
    rss = " ".join(f"{k}={v:.0f}" for k, v in row["rss_mib"].items())
    per_result = 1000 * row["cpu_s"]["aggregator"] / row["results"]
    print(
        f"sites={row['sites']:>3} models={row['models']:>2} results={row['results']:>5} "
        f"all-started={row['all_started_s']:.2f}s on-board={row['on_board_s']:.2f}s wall={row['wall_s']:.1f}s "
        f"events/s={row['events_per_s']:.0f} aggregator-cpu/result={per_result:.2f}ms | cpu {cpu} | rss MiB {rss}",
        flush=True,
    )


async def main(site_counts: list[int], model_counts: list[int], out: Path | None) -> None:
    print(f"machine: {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for n in site_counts:
        rows += await run_size(n, model_counts)
    if out:
        out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 100, 300])
    parser.add_argument("--models", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    # A SIGTERM (e.g. from `timeout`) unwinds through the finally blocks, which stop the services.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main(args.sites, args.models, args.json))
