"""``medperf console ...``: the admin event console in a terminal. Everything goes through the
HTTP ingress (``/console/*`` and the existing decision endpoints), under the caller's token."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from cli import console_render as render
from cli.client import ApiError, Client


def add_commands(commands: Any) -> None:
    console = commands.add_parser("console", help="the admin event console: events, pending decisions, sites")
    sub = console.add_subparsers(dest="console_command", required=True)

    events = sub.add_parser("events", help="tail the live event stream (admins: all; others: what they own)")
    events.add_argument("--benchmark", type=int, help="only events about this benchmark")
    events.add_argument("--site", help="only events from or about this site")
    events.add_argument("--entity", help="only events about KIND:ID, e.g. model:7, dataset:3, job:12, user:alice")
    events.add_argument("--type", help="event types or patterns, comma-separated, e.g. 'job.*,association.*'")
    start = events.add_mutually_exclusive_group()
    start.add_argument("--since", help="start at a time: ISO 8601, or an age like 30s, 10m, 2h, 1d")
    start.add_argument("--since-seq", type=int, help="start at this feed sequence (the #number each line shows)")
    start.add_argument("--last", type=int, help="start this many events back")
    events.add_argument("--no-follow", action="store_true", help="print the history and stop")
    events.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    events.add_argument("--json", action="store_true", help="one JSON object per line")

    reads = [
        sub.add_parser("pending", help="what waits for a decision, and the command that decides each"),
        sub.add_parser("sites", help="every site agent: heartbeat, running and queued jobs, failures, silence"),
    ]
    jobs = sub.add_parser(
        "jobs",
        help="jobs and why the failed ones failed: every site's for admins; otherwise your sites', and your "
        "models' and benchmarks' at every site (their log tails stay at the site)",
    )
    jobs.add_argument("--site")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jobs.add_argument("--benchmark", type=int)
    jobs.add_argument("--model", type=int)
    reads.append(jobs)

    letters = sub.add_parser("dead-letters", help="messages consumers gave up on (admins)")
    letters_sub = letters.add_subparsers(dest="letters_command", required=True)
    reads.append(letters_sub.add_parser("ls", help="list them with the reason"))
    for verb, text in (("retry", "publish it to its original subject again"), ("discard", "forget it for good")):
        letters_sub.add_parser(verb, help=text).add_argument("sequence", type=int)

    for verb in ("approve", "reject"):
        decide = sub.add_parser(verb, help=f"{verb} a pending benchmark (admins) or association")
        decide.add_argument("what", choices=["benchmark", "model", "dataset"])
        decide.add_argument("id", type=int, help="the benchmark's, model's or dataset's id")
        decide.add_argument("--benchmark", type=int, help="for a model or dataset: the benchmark it asks to join")
        decide.add_argument("--reason", default="")
    for read in reads:
        read.add_argument("--format", choices=["table", "json"], default="table", help="json: for scripts")


def run(args: argparse.Namespace, client: Client, out: TextIO = sys.stdout) -> int:
    command = args.console_command
    if command == "events":
        return _events(args, client, out)
    if command == "pending":
        _show(args, client.get("/console/pending"), render.pending_text, out)
    elif command == "sites":
        _show(args, client.get("/console/sites"), render.sites_text, out)
    elif command == "jobs":
        filters = {"site": args.site, "status": args.status, "benchmark_id": args.benchmark, "model_id": args.model}
        found = client.console_jobs(**filters)
        if args.format == "json":
            print(json.dumps(found, indent=2), file=out)
            return 0
        print(render.jobs_text(found), file=out)
        kept = sorted({j["site"] for j in found if j.get("log_tail_kept_at_site")})
        if kept:
            where = ", ".join(kept)
            print(
                f"\nLog tails may quote patient data: they stay at the site ({where}) until its data owner "
                "releases one there: `medperf job release-log JOB_ID`.",
                file=out,
            )
    elif command == "dead-letters":
        if args.letters_command == "ls":
            _show(args, client.get("/console/dead-letters"), render.dead_letters_text, out)
        elif args.letters_command == "retry":
            done = client.post(f"/console/dead-letters/{args.sequence}/retry", {})
            print(f"republished dead letter {args.sequence} to {done['subject']}", file=out)
        else:
            client.delete(f"/console/dead-letters/{args.sequence}")
            print(f"discarded dead letter {args.sequence}", file=out)
    else:
        return _decide(args, client, out)
    return 0


def _show(args: argparse.Namespace, found: Any, text: Callable[[Any], str], out: TextIO) -> None:
    print(json.dumps(found, indent=2) if args.format == "json" else text(found), file=out)


def _decide(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    approve = args.console_command == "approve"
    if args.what == "benchmark":
        client.decide_benchmark(args.id, approve=approve, reason=args.reason)
        print(f"benchmark {args.id}: {'approved' if approve else 'rejected'}", file=out)
        return 0
    if args.benchmark is None:
        raise ApiError(422, f"say which benchmark the {args.what} asks to join: --benchmark ID")
    decided = client.decide_association(args.benchmark, args.what, args.id, approve=approve, reason=args.reason)
    print(f"{args.what} {args.id} in benchmark {args.benchmark}: {decided.get('status', 'decided')}", file=out)
    return 0


def _events(args: argparse.Namespace, client: Client, out: TextIO) -> int:
    try:
        since = render.since_time(args.since).isoformat() if args.since else None
    except ValueError as exc:
        raise ApiError(422, str(exc)) from None
    colour = args.color == "always" or (args.color == "auto" and out.isatty() and not os.environ.get("NO_COLOR"))
    lines = client.stream_lines(
        "/console/events",
        benchmark=args.benchmark,
        site=args.site,
        entity=args.entity,
        type=args.type,
        since_seq=args.since_seq,
        since_time=since,
        last=args.last,
        follow=str(not args.no_follow).lower(),
    )
    for name, _, data in render.parse_sse(lines):
        item = json.loads(data)
        if name == "live":
            if not args.no_follow and not args.json:
                print(f"-- live from #{item['seq'] + 1} (Ctrl-C to stop) --", file=out, flush=True)
            continue
        print(json.dumps(item) if args.json else render.event_line(item, colour), file=out, flush=True)
    return 0
