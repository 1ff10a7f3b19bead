"""``medperf test run``: a model owner tests a model against a registered benchmark on their own
machine, before (or instead of) asking the committee's agent to.

It runs the site's own pipeline (``services.executor.workflow``) with the local Docker engine: the
benchmark's data preparator on its demo dataset (or on local data), the model, then the benchmark's
metrics container; it prints the declared metrics before anything is sent. With ``--submit`` the
report is signed with the user's own key (``<config dir>/keys/<profile>.key``, 0600, registered at
the user's own site ``workstation-<user>`` through ``POST /sites/{site}/keys``) and attached to the
model's association request. Approvals counts it because the model's owner signed it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli import profiles
from cli.client import Client
from cli.output import UsageError, add_format, connect, table
from cli.verbs import Verbs
from shared.containers import ContainerSpec, HostedFile
from shared.events import CompatibilityReport
from shared.signing import SiteKey

if TYPE_CHECKING:  # the pipeline (and the Docker SDK) is imported when a test runs, not for every command
    from services.executor.workflow import PreparedData, Workflow

STAGES = {
    "prepare": "prepare the data (benchmark's data preparator)",
    "sanity_check": "check the prepared data",
    "statistics": "compute the data's statistics",
    "infer": "run the model",
    "evaluate": "score the predictions (benchmark's metrics container)",
}


def add_commands(verbs: Verbs) -> None:
    run = verbs.verb(
        "test",
        "run",
        _run,
        "run a benchmark's workflow on your machine with a model; --submit signs the result and asks to join",
        group_help="test a model against a benchmark locally (MedPerf's compatibility test)",
    )
    add_test_arguments(run)
    model = run.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", type=int, help="a registered model's id")
    model.add_argument("--container", type=Path, metavar="SPEC_JSON", help="a local container spec, not registered")
    run.add_argument("--data-path", type=Path, help="test on your own raw data instead of the benchmark's demo data")
    run.add_argument("--labels-path", type=Path, help="its labels (with --data-path)")
    run.add_argument("--submit", action="store_true", help="sign the passed test and request the association")
    add_format(run)


def add_test_arguments(parser: argparse.ArgumentParser) -> None:
    """What ``model associate --test`` shares with ``test run``."""
    if not any(a.dest == "benchmark" for a in parser._actions):
        parser.add_argument("-b", "--benchmark", type=int, required=True, help="the registered benchmark's id")
    parser.add_argument("--work-dir", type=Path, help="where data and outputs go (default: ./medperf-test)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a task may run (default 1800)")


def _run(args: argparse.Namespace) -> int:
    if (args.data_path is None) != (args.labels_path is None):
        raise UsageError("give both --data-path and --labels-path, or neither (the benchmark's demo data)")
    if args.submit and args.model is None:
        raise UsageError(
            "--submit needs a registered model: medperf container submit NAME --spec SPEC_JSON; "
            "medperf model submit --name NAME --container ID; then test it with --model ID --submit"
        )
    if args.submit and args.data_path is not None:
        raise UsageError("--submit attaches a test on the benchmark's demo data: drop --data-path and --labels-path")
    client = connect()
    report = run_test(client, args)
    if args.format == "json":
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        _show(report)
    if not report.passed:
        return 1
    if args.submit:
        submit(client, report)
    return 0


def run_test(client: Client, args: argparse.Namespace) -> CompatibilityReport:
    """The benchmark's workflow on this machine; the report is not signed yet."""
    benchmark = client.entity("benchmark", args.benchmark)
    if args.model is not None:
        model = _container(client, client.entity("model", args.model)["container_id"])
    else:
        model = _local_spec(args.container)
    tested = f"model {args.model}" if args.model else str(args.container)
    return run_workflow(
        f"Testing {tested} on {benchmark['name']}",
        _container(client, benchmark["data_preparator_id"]),
        model,
        _container(client, benchmark["metrics_container_id"]),
        HostedFile.model_validate(benchmark["demo_dataset"]),
        [m["name"] for m in benchmark["metrics"]],
        args,
        benchmark_id=args.benchmark,
        kind="model",
        component_id=args.model,
    )


def run_workflow(
    title: str,
    preparator: ContainerSpec,
    model: ContainerSpec,
    metrics: ContainerSpec,
    demo: HostedFile,
    declared: list[str],
    args: argparse.Namespace,
    **about: Any,
) -> CompatibilityReport:
    """Prepare the demo data (or ``args.data_path``), run ``model`` and score it with ``metrics``,
    as a site would; ``about`` says what the report is about (benchmark, kind, component)."""
    from rich.console import Console

    from services.executor.assets import AssetError
    from services.executor.runtime import EngineUnavailable, ImageNotAvailable, TaskStartError
    from services.executor.workflow import TaskFailed

    console = Console(stderr=True, highlight=False)
    work = (args.work_dir or Path.cwd() / "medperf-test").resolve()
    workflow = staged_workflow(console, work, args.timeout)
    tested = {"preparator": preparator.image_digest, "model": model.image_digest, "metrics": metrics.image_digest}
    common: dict[str, Any] = {**about, "container_digests": tested}
    console.print(title)
    try:
        prepared = asyncio.run(_prepare(workflow, console, args, demo, preparator, work / "prepared"))
        scores = asyncio.run(workflow.score(model, metrics, prepared, work / "run"))
    except TaskFailed as failed:
        if failed.log_tail:
            console.print(f"[dim]{failed.log_tail.rstrip()}[/]")
        detail = f"{failed} (the {failed.fault}'s fault)"
        return CompatibilityReport(passed=False, detail=detail, failure=failed.fault, **common)
    except (AssetError, ImageNotAvailable, EngineUnavailable, TaskStartError) as exc:
        # This machine's problem (no network to the host, an image not loaded here): nobody's test result.
        raise UsageError(f"the workflow could not run here: {exc}") from exc
    data_hash = demo.sha256 if args.data_path is None else prepared.prepared_hash
    on = "the benchmark's demo data" if args.data_path is None else "the model owner's own data"
    missing = [name for name in declared if name not in scores.metrics]
    if missing:
        wrote = ", ".join(sorted(scores.metrics)) or "none"
        detail = f"the metrics container did not write {', '.join(missing)} (it wrote: {wrote})"
        return CompatibilityReport(passed=False, detail=detail, failure="metrics", **common)
    return CompatibilityReport(
        passed=True,
        metrics={n: scores.metrics[n] for n in declared},
        detail=f"ran on {on} with `medperf test run`" + (" (partial)" if scores.partial else ""),
        data_hash=data_hash,
        **common,
    )


def submit(client: Client, report: CompatibilityReport) -> None:
    """Sign ``report`` with the user's own key and ask to join with it attached."""
    user = client.get("/me")["user"]
    site = workstation(user)
    key = SiteKey.load_or_create(key_path())
    client.post(f"/sites/{site}/keys", {"public_key": key.public_key})  # the same key again is a no-op
    signed = key.sign_report(report, site)
    body = {"kind": "model", "component_id": report.component_id, "compatibility": signed.model_dump(mode="json")}
    asked = client.post(f"/benchmarks/{report.benchmark_id}/associations", body)
    print(
        f"model {report.component_id} asked to join benchmark {report.benchmark_id} with test {signed.report_id} "
        f"signed by key {key.key_id} of site {site}: {asked.get('status', 'PENDING')}"
    )


def workstation(user: str) -> str:
    """The site a user's own key is registered at: ``workstation-`` and the user, as a site name."""
    name = re.sub(r"[^a-z0-9]+", "-", user.lower()).strip("-") or "user"
    return f"workstation-{name}"[:63].rstrip("-")


def key_path() -> Path:
    """The user's signing key for the active profile (one federation, one identity)."""
    folder = profiles.config_dir() / "keys"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"{profiles.active()[0]}.key"


def staged_workflow(console: Any, work: Path, timeout: float) -> Workflow:
    """The site's pipeline on the local engine, saying which stage runs and how each ended."""
    from services.executor.assets import AssetCache
    from services.executor.runtime import DockerRuntime
    from services.executor.workflow import Workflow
    from shared.settings import Settings

    class StagedWorkflow(Workflow):
        async def run_task(self, spec: ContainerSpec, task_name: str, *args: Any, **kwargs: Any) -> None:
            label = STAGES.get(task_name, task_name)
            started = time.monotonic()
            try:
                with console.status(f"{label} ..."):
                    await super().run_task(spec, task_name, *args, **kwargs)
            except Exception:
                console.print(f"[red]x[/] {label}")
                raise
            console.print(f"[green]ok[/] {label} ({time.monotonic() - started:.1f} s)")

    try:
        engine = DockerRuntime.from_env()
    except Exception as exc:  # docker's own errors name no remedy
        raise UsageError(f"no Docker engine answers ({exc}); start Docker or set DOCKER_HOST") from exc
    cache = AssetCache(work / "cache", config_dir=Settings().state_dir)
    return StagedWorkflow(engine, cache, work, timeout)


async def _prepare(
    workflow: Workflow,
    console: Any,
    args: argparse.Namespace,
    demo: HostedFile,
    preparator: ContainerSpec,
    out: Path,
) -> PreparedData:
    from services.executor.demo import prepare_demo

    if args.data_path is not None:
        return await workflow.prepare(preparator, args.data_path.resolve(), args.labels_path.resolve(), out)
    with console.status(f"fetching the demo data ({demo.source}) ..."):
        await workflow.cache.extracted(demo)  # cached: prepare_demo finds it there
    console.print("[green]ok[/] fetch the benchmark's demo data")
    return await prepare_demo(workflow, demo, preparator, out)


def _show(report: CompatibilityReport) -> None:
    if report.passed:
        rows = [{"metric": name, "value": value} for name, value in report.metrics.items()]
        table(rows, ["metric", "value"], title=f"Passed: {report.detail}")
    else:
        print(f"Failed: {report.detail}")


def _container(client: Client, container_id: int) -> ContainerSpec:
    return ContainerSpec.model_validate(client.entity("container", container_id)["spec"])


def _local_spec(path: Path) -> ContainerSpec:
    try:
        return ContainerSpec.model_validate_json(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise UsageError(f"{path} is not a container spec: {exc}") from exc
