"""``medperf benchmark|association|result|leaderboard|provenance``: what a committee decides and
what everyone may see of the results, over the ingress's HTTP API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cli.client import ApiError, Client
from cli.output import UsageError, add_format, confirm, connect, listing, view
from cli.render import leaderboard_table, provenance_table
from cli.verbs import Verbs
from shared.containers import ContainerSpec, HostedFile

BENCHMARK_COLUMNS = ["id", "name", "owner", "state", "approval_status", "primary_metric", "created_at"]
# The compatibility test each request carries: passed or not, and the site (and key) that signed it.
ASSOCIATION_COLUMNS = [
    "benchmark_id",
    "kind",
    "component_id",
    "status",
    "priority",
    "initiated_by",
    "approved_by",
    "compatibility.passed",
    "compatibility.site",
]
VISIBILITY = {
    "committee": "only the committee (the benchmark's owner) and admins see the board",
    "participants": "owners of an approved model or dataset of this benchmark see the shared board",
    # services/ingress/permissions.py: the leaderboard route refuses anonymous callers whatever the policy.
    "public": "every logged-in user of this federation sees the shared board (a token is still needed: "
    "the federation answers nothing to anonymous callers)",
}


def add_commands(verbs: Verbs) -> None:
    verbs.group("benchmark", "benchmarks: submit, list, view, approve (admins), auto-approval (committee)")
    submit = verbs.verb("benchmark", "submit", _submit, "submit a benchmark; an admin approves it")
    submit.add_argument("--file", "-f", type=Path, help="every field as YAML or JSON (the options below override)")
    submit.add_argument("--name", "-n")
    submit.add_argument("--description", "-d", default=None)
    submit.add_argument("--data-preparator", "-p", type=int, help="the data preparator container's id")
    submit.add_argument("--reference-model", "-m", type=int, help="the reference model's id")
    submit.add_argument("--metrics-container", "-e", type=int, help="the metrics (evaluator) container's id")
    submit.add_argument("--demo-url", help="the demo dataset tarball's URL (or synapse:ID)")
    submit.add_argument("--demo-sha256", help="its sha256 (sites refuse other bytes)")
    submit.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="NAME[:lower][:AGGREGATE]",
        help="a declared metric, e.g. auc or loss:lower:median (repeat); the first is primary unless --primary-metric",
    )
    submit.add_argument("--primary-metric")
    submit.add_argument("--operational", action="store_true", help="submit in OPERATION state (no more edits)")
    submit.add_argument(
        "--no-test", action="store_true", help="register without first running the workflow on the demo data here"
    )
    submit.add_argument("--work-dir", type=Path, help="where the test's data and outputs go (default: ./medperf-test)")
    submit.add_argument("--timeout", type=float, default=1800.0, help="seconds a test task may run (default 1800)")
    listed = verbs.verb("benchmark", "ls", _ls, "list benchmarks")
    listed.add_argument("--mine", action="store_true", help="only yours")
    listed.add_argument("--status", choices=["PENDING", "APPROVED", "REJECTED"])
    add_format(listed)
    shown = verbs.verb("benchmark", "view", _view, "a benchmark, its ranking rules and who sees its results")
    shown.add_argument("id", type=int)
    add_format(shown, "yaml")
    for verb, approve in (("approve", True), ("reject", False)):
        decide = verbs.verb("benchmark", verb, _decide, f"{verb} a submitted benchmark (admins)")
        decide.add_argument("id", type=int)
        decide.add_argument("--reason", default="")
        decide.add_argument("-y", "--yes", action="store_true", help="do not ask")
        decide.set_defaults(approve=approve)
    auto = verbs.verb(
        "benchmark",
        "set-auto-approval",
        _auto,
        "approve dataset or model requests without a person deciding",
        aliases=["set_auto_approval"],
    )
    auto.add_argument("id", type=int)
    auto.add_argument("--kind", choices=["dataset", "model"], required=True)
    auto.add_argument("--mode", choices=["NEVER", "ALWAYS", "ALLOWLIST"], required=True)
    auto.add_argument("--allow", action="append", default=[], metavar="USER", help="for ALLOWLIST (repeat)")

    verbs.group("association", "requests of datasets and models to join benchmarks")
    assoc = verbs.verb("association", "ls", _associations, "associations you are party to (or one benchmark's)")
    assoc.add_argument("--benchmark", "-b", type=int)
    assoc.add_argument("--kind", choices=["dataset", "model"])
    assoc.add_argument("--status", choices=["PENDING", "APPROVED", "REJECTED"])
    add_format(assoc)
    for verb, approve in (("approve", True), ("reject", False)):
        decide = verbs.verb("association", verb, _decide_association, f"{verb} a pending association request")
        decide.add_argument("--benchmark", "-b", type=int, required=True)
        which = decide.add_mutually_exclusive_group(required=True)
        which.add_argument("--dataset", "-d", type=int)
        which.add_argument("--model", "-m", type=int)
        decide.add_argument("--reason", default="")
        decide.add_argument("-y", "--yes", action="store_true", help="do not ask")
        decide.set_defaults(approve=approve)

    verbs.group("result", "results: the federation's you may see; a site's own (--local)")
    results = verbs.verb("result", "ls", _results, "results you may see, per benchmark (--local: this site's)")
    results.add_argument("--benchmark", "-b", type=int, help="only this benchmark")
    results.add_argument("--local", action="store_true", help="this site's own results (the agent's database)")
    results.add_argument("--pending", action="store_true", help="this site's results held for your release")
    add_format(results)
    result = verbs.verb("result", "view", _result, "a benchmark's board as you may see it, or one model's row")
    result.add_argument("benchmark_id", type=int)
    result.add_argument("--model", "-m", type=int, help="one model: its row and where its results came from")
    add_format(result, "yaml")

    board = verbs.command("leaderboard", _leaderboard, "print a benchmark's leaderboard")
    board.add_argument("benchmark_id", type=int)
    board.add_argument("--format", choices=["table", "json", "csv"], default="table", help="csv: every row")
    board.add_argument("--limit", type=int, default=100, help="rows per page (at most 100)")
    board.add_argument("--offset", type=int, default=0, help="rows to skip, in rank order")
    origin = verbs.command(
        "provenance", _provenance, "where a model's results on a benchmark came from, site by site (signed, approved)"
    )
    origin.add_argument("benchmark_id", type=int)
    origin.add_argument("model_id", type=int)
    origin.add_argument("--format", choices=["table", "json"], default="table")


def read_fields(path: Path | None) -> dict[str, Any]:
    """A YAML or JSON file of fields (JSON is YAML)."""
    if path is None:
        return {}
    try:
        fields = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML or JSON: {str(exc).splitlines()[0]}") from exc
    if not isinstance(fields, dict):
        raise UsageError(f"{path} must hold a mapping of fields")
    return fields


def _metric(text: str) -> dict[str, Any]:
    name, *rest = text.split(":")
    metric: dict[str, Any] = {"name": name}
    for part in rest:
        if part in ("lower", "higher"):
            metric["higher_is_better"] = part == "higher"
        elif part in ("mean", "weighted_mean", "median", "min"):
            metric["aggregate"] = part
        else:
            raise UsageError(f"--metric {text}: {part!r} is neither lower/higher nor mean/weighted_mean/median/min")
    return metric


def _submit(args: argparse.Namespace) -> int:
    fields = read_fields(args.file)
    given = {
        "name": args.name,
        "description": args.description,
        "data_preparator_id": args.data_preparator,
        "reference_model_id": args.reference_model,
        "metrics_container_id": args.metrics_container,
        "primary_metric": args.primary_metric,
    }
    fields.update({k: v for k, v in given.items() if v is not None})
    if args.demo_url:
        fields["demo_dataset"] = {"source": args.demo_url, "sha256": args.demo_sha256 or ""}
    if args.metric:
        fields["metrics"] = [_metric(m) for m in args.metric]
    if fields.get("metrics") and not fields.get("primary_metric"):
        fields["primary_metric"] = fields["metrics"][0]["name"]
    if args.operational:
        fields["state"] = "OPERATION"
    missing = [
        flag
        for flag, key in (
            ("--name", "name"),
            ("--data-preparator", "data_preparator_id"),
            ("--reference-model", "reference_model_id"),
            ("--metrics-container", "metrics_container_id"),
            ("--demo-url", "demo_dataset"),
            ("--metric", "metrics"),
        )
        if not fields.get(key)
    ]
    if missing:
        raise UsageError(f"a benchmark needs {', '.join(missing)} (or those fields in --file)")
    client = connect()
    if not args.no_test:
        _test_before_submitting(client, fields, args)
    benchmark_id = client.submit_benchmark(**fields)
    print(f"submitted benchmark {benchmark_id}; an admin approves it: `medperf benchmark approve {benchmark_id}`")
    return 0


def _test_before_submitting(client: Client, fields: dict[str, Any], args: argparse.Namespace) -> None:
    """MedPerf's rule: a benchmark is registered only once its own workflow ran end to end on its
    demo data, here, with the local engine (prepare, the reference model, the metrics container)."""
    from cli.testing import run_workflow

    try:
        demo = HostedFile.model_validate(fields["demo_dataset"])
    except ValueError as exc:
        why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise UsageError(f"the demo dataset: {why} (give --demo-sha256, or --no-test to skip the test)") from exc
    model = client.entity("model", fields["reference_model_id"])
    specs = [
        ContainerSpec.model_validate(client.entity("container", container_id)["spec"])
        for container_id in (fields["data_preparator_id"], model["container_id"], fields["metrics_container_id"])
    ]
    declared = [metric["name"] for metric in fields["metrics"]]
    local = argparse.Namespace(data_path=None, labels_path=None, work_dir=args.work_dir, timeout=args.timeout)
    try:
        report = run_workflow(f"Testing benchmark {fields['name']} on its demo data", *specs, demo, declared, local)
    except UsageError as exc:
        raise UsageError(f"not submitted: {exc} (--no-test skips the test)") from exc
    if not report.passed:
        raise UsageError(f"not submitted: the benchmark's workflow failed on its demo data: {report.detail}")
    shown = ", ".join(f"{name} {value:.4g}" for name, value in report.metrics.items())
    print(f"the workflow ran on the demo data: {shown}")


def _ls(args: argparse.Namespace) -> int:
    rows = connect().entities("benchmark", mine=args.mine, approval_status=args.status)
    return listing(rows, args.format, BENCHMARK_COLUMNS)


def _view(args: argparse.Namespace) -> int:
    client = connect()
    benchmark = client.entity("benchmark", args.id)
    if args.format == "json":
        view(benchmark, "json")
        return 0
    try:
        policy = client.leaderboard(args.id, limit=1).get("policy")  # the committee's and admins' view has it
    except ApiError:  # not shared with the caller: the rules are still worth stating
        policy = None
    view({**benchmark, "results": explain(benchmark, policy)})
    return 0


def explain(benchmark: dict[str, Any], policy: dict[str, Any] | None) -> dict[str, Any]:
    """The board's ranking rules and the sharing policy, in words."""
    metrics = {m["name"]: m for m in benchmark.get("metrics") or []}
    primary = metrics.get(benchmark.get("primary_metric"), {"name": benchmark.get("primary_metric")})
    better = "higher" if primary.get("higher_is_better", True) else "lower"
    aggregate = primary.get("aggregate", "mean")
    ranking = (policy or {}).get("ranking", "primary")
    rule = (
        f"each model's mean rank across sites by {primary['name']} (tied values share their mean place)"
        if ranking == "mean_rank"
        else f"{primary['name']} combined across sites by {aggregate}, {better} is better"
    )
    shown: dict[str, Any] = {
        "ranking": rule,
        "ties": "more sites reported first; then the better combined value (mean rank); then the older model",
        "missing": "a model without a site's result shows '-' there and is flagged incomplete",
    }
    if policy is None:
        shown["visibility"] = (
            "set by the committee (default: participants); "
            + VISIBILITY["participants"]
            + ". You always see your own models' and datasets' results"
        )
        return shown
    shown["visibility"] = f"{policy['visibility']}: {VISIBILITY[policy['visibility']]}"
    shown["granularity"] = policy["granularity"]
    shown["min_sites"] = policy["min_sites"]
    shown["min_cases"] = policy["min_cases"]
    if not policy.get("released", True) or policy.get("embargo_until"):
        shown["embargo"] = f"held until {policy.get('embargo_until') or 'the committee releases it'}"
    return shown


def _decide(args: argparse.Namespace) -> int:
    client = connect()
    verb = "approve" if args.approve else "reject"
    confirm(f"{verb} benchmark {args.id} ({client.entity('benchmark', args.id)['name']})?", args.yes)
    client.decide_benchmark(args.id, approve=args.approve, reason=args.reason)
    print(f"benchmark {args.id} {verb.rstrip('e')}ed")
    return 0


def _auto(args: argparse.Namespace) -> int:
    connect().set_auto_approval(args.id, args.kind, args.mode, args.allow)
    extra = f" ({', '.join(args.allow)})" if args.allow else ""
    print(f"benchmark {args.id}: {args.kind} requests are approved {args.mode}{extra}")
    return 0


def _associations(args: argparse.Namespace) -> int:
    client = connect()
    filters = {"kind": args.kind, "status": args.status}
    if args.benchmark:
        rows = client.associations(args.benchmark, **filters)
    else:
        rows = client.get("/me/associations", **filters)
    return listing(rows, args.format, ASSOCIATION_COLUMNS)


def _decide_association(args: argparse.Namespace) -> int:
    kind, component = ("dataset", args.dataset) if args.dataset else ("model", args.model)
    verb = "approve" if args.approve else "reject"
    client = connect()
    confirm(f"{verb} {kind} {component}'s association with benchmark {args.benchmark}?", args.yes)
    client.decide_association(args.benchmark, kind, component, approve=args.approve, reason=args.reason)
    print(f"{kind} {component} on benchmark {args.benchmark}: {verb.rstrip('e')}ed")
    return 0


def _results(args: argparse.Namespace) -> int:
    if args.local or args.pending:
        from cli import site

        return site.run(args)
    client = connect()
    if args.benchmark:
        benchmarks = [client.entity("benchmark", args.benchmark)]
    else:
        benchmarks = client.entities("benchmark", approval_status="APPROVED", limit=500)
    rows = []
    for benchmark in benchmarks:
        try:
            board = client.leaderboard(benchmark["id"])
        except ApiError as exc:  # a board not shared with you is left out of the listing, not an error
            if args.benchmark or exc.status not in (403, 404):
                raise
            continue
        rows += _rows(benchmark, board)
    return listing(rows, args.format, ["benchmark", "rank", "model", "metric", "value", "sites", "seen_as"])


def _rows(benchmark: dict[str, Any], board: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for seen_as, part in (("shared", board), ("yours", board.get("yours") or {})):
        for row in part.get("rows") or []:
            summary = row["metrics"][part["primary_metric"]]
            rows.append(
                {
                    "benchmark": f"{benchmark['id']} {benchmark['name']}",
                    "rank": row.get("rank"),
                    "model": row["model"],
                    "metric": f"{part.get('aggregate', 'mean')} {part['primary_metric']}",
                    "value": summary["value"],
                    "sites": sum(v is not None for v in (row.get("per_dataset") or {}).values()),
                    "seen_as": board.get("scope") if seen_as == "shared" else "yours",
                }
            )
    return rows


def _result(args: argparse.Namespace) -> int:
    client = connect()
    board = client.leaderboard(args.benchmark_id)
    if args.model is None:
        view(board, args.format)
        return 0
    model = client.entity("model", args.model)["name"]
    rows = [r for part in (board, board.get("yours") or {}) for r in part.get("rows") or [] if r["model"] == model]
    view({"model": model, "rows": rows, "provenance": client.provenance(args.benchmark_id, args.model)}, args.format)
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    client = connect()
    if args.format == "csv":
        print(client.leaderboard_csv(args.benchmark_id), end="")
    elif args.format == "json":
        print(json.dumps(client.leaderboard(args.benchmark_id, args.limit, args.offset), indent=2))
    else:
        print(leaderboard_table(client.leaderboard(args.benchmark_id, args.limit, args.offset)))
    return 0


def _provenance(args: argparse.Namespace) -> int:
    shown = connect().provenance(args.benchmark_id, args.model_id)
    print(json.dumps(shown, indent=2) if args.format == "json" else provenance_table(shown))
    return 0
