"""``medperf job ...``, ``medperf result ...`` and ``medperf site ...``: what a hospital's staff do
to their own agent, on the agent's database (configured by the same ``MEDPERF_SITE_*`` variables
as the agent). The running agent picks the changes up within a second; nothing here needs the
federation's network."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from cli.verbs import Verbs

if TYPE_CHECKING:
    from services.executor.settings import SiteSettings
    from services.executor.store import Job


def add_commands(verbs: Verbs) -> None:
    verbs.group("job", "this site's jobs")
    verbs.verb("job", "ls", run, "list this site's jobs")
    for name, text in (
        ("cancel", "cancel a queued or running job"),
        ("rerun", "run a finished job's work again"),
        ("log", "the tail of a job's log, here at the site (it may quote patient data)"),
        ("release-log", "let a failed job's log tail leave the site: its model owner and committee then read it"),
    ):
        verbs.verb("job", name, run, text, aliases=[name.replace("-", "_")] if "-" in name else ()).add_argument(
            "job_id", type=int
        )

    release = verbs.verb("result", "release", run, "let results' metrics leave this site (held for your release)")
    which = release.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "job_ids", nargs="*", type=int, default=[], metavar="ID", help="the jobs whose results to release"
    )
    which.add_argument("--all", action="store_true", help="every result waiting for your release")

    verbs.group("site", "this site's agent")
    verbs.verb("site", "drain", run, "finish running jobs, start no new ones (maintenance)")
    verbs.verb("site", "resume", run, "start taking jobs again after a drain")
    key = verbs.verb("site", "key", run, "the key this site signs its results with").add_subparsers(
        dest="key_command", required=True
    )
    key.add_parser("show", help="this site's key id and public key (created if missing); and the registry's view")
    key.add_parser("register", help="register this site's public key with the site (the agent does it at start)")
    revoke = key.add_parser("revoke", help="stop trusting a key of this site (lost, leaked, replaced)")
    revoke.add_argument("key_id")
    revoke.add_argument("--reason", default="")
    revoke.add_argument(
        "--compromised-since", help="ISO time the key may have leaked: results it signed since are refused too"
    )


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every `medperf` command builds this parser, and the agent's
    # modules (Docker SDK, the runner) would add a second to each one's start.
    from services.executor.settings import SiteSettings

    if args.command == "site" and args.site_command == "key":
        return _key(args, SiteSettings())  # type: ignore[call-arg]
    return asyncio.run(_run(args, SiteSettings()))  # type: ignore[call-arg]


def _key(args: argparse.Namespace, site: SiteSettings) -> int:
    """The private key stays in the work directory; only the public key and its id are shown or sent.
    Registering and revoking go through the federation's API, as the logged-in user."""
    import httpx

    from cli.client import ApiError, Client, Unreachable
    from cli.output import UsageError
    from shared.signing import SiteKey

    key = SiteKey.load_or_create(site.key_path)
    if args.key_command == "show":
        print(f"site:       {site.name}\nkey id:     {key.key_id}")
        print(f"public key: {key.public_key}\nfile:       {site.key_path}")
        try:
            registered = Client.from_credentials().get(f"/sites/{site.name}/keys")
        except (ApiError, Unreachable, UsageError, httpx.HTTPError) as exc:  # not logged in, unreachable
            print(f"(the registry's view is unavailable: {exc})")
            return 0
        for row in registered:
            state = f"revoked {row['revoked_at']} by {row['revoked_by']}" if row["revoked_at"] else "active"
            mark = "*" if row["key_id"] == key.key_id else " "
            print(f"{mark} {row['key_id']}  registered {row['registered_at']} by {row['owner']}  {state}")
        return 0
    client = Client.from_credentials()
    try:
        if args.key_command == "register":
            client.post(f"/sites/{site.name}/keys", {"public_key": key.public_key})
            print(f"registered key {key.key_id} for site {site.name}")
        else:
            body = {"reason": args.reason, "compromised_since": args.compromised_since}
            revoked = client.post(f"/sites/{site.name}/keys/{args.key_id}/revocation", body)
            print(f"revoked key {args.key_id}; results it signed from {revoked['effective_from']} on are refused")
            if args.key_id == key.key_id:
                print(f"this agent's own key: remove {site.key_path} and restart the agent to sign with a new one")
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(args: argparse.Namespace, site: SiteSettings) -> int:
    from services.executor import operations
    from services.executor.store import TABLES, Base
    from shared.db import Database, UnitOfWork

    db = Database(site.database())
    await db.create_all(Base.metadata)

    def uow() -> UnitOfWork:
        return UnitOfWork(db, TABLES)  # the agent's outbox relay publishes what this queues

    try:
        if args.command == "job" and args.job_command == "ls":
            _print_jobs(await operations.jobs(uow()))
        elif args.command == "job" and args.job_command == "cancel":
            job = await operations.cancel(uow(), args.job_id)
            print(f"job {job.id}: cancel requested; the agent stops it and removes its containers")
        elif args.command == "job" and args.job_command == "log":
            print(operations.log_tail(site, args.job_id))
        elif args.command == "job" and args.job_command in ("release-log", "release_log"):
            tail = await operations.release_log(uow(), site, args.job_id)
            print(f"released the log tail of job {args.job_id} ({len(tail.splitlines())} lines) to the federation")
        elif args.command == "job":
            job = await operations.rerun(uow(), site, args.job_id)
            print(f"queued job {job.id}, a re-run of job {args.job_id}")
        elif args.command == "result" and args.result_command == "ls":
            jobs = await operations.jobs(uow(), pending_release=args.pending)
            _print_jobs([j for j in jobs if j.status == "succeeded" and (j.kind == "run" or j.release != "none")])
        elif args.command == "result":
            ids = [j.id for j in await operations.jobs(uow(), pending_release=True)] if args.all else args.job_ids
            if not ids:
                print("no result waits for your release")
            for job_id in ids:
                job = await operations.release_result(uow(), site, job_id)
                print(f"released the result of job {job.id}: {job.metrics}")
        else:
            await operations.set_draining(uow(), args.site_command == "drain")
            print("draining: running jobs finish, queued ones wait" if args.site_command == "drain" else "resumed")
    except operations.NotPossible as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    return 0


def _print_jobs(jobs: list[Job]) -> None:
    print(f"{'id':>5}  {'kind':13} {'status':10} {'benchmark':>9} {'model':>6} {'dataset':>7}  {'release':9} detail")
    for j in jobs:
        detail = f"{j.failure}: {j.detail}" if j.failure else ", ".join(f"{k}={v:.4g}" for k, v in j.metrics.items())
        flag = " (partial)" if j.partial else ""
        ids = f"{j.benchmark_id:>9} {j.model_id or '-':>6} {j.dataset_id or '-':>7}"
        print(f"{j.id:>5}  {j.kind:13} {j.status:10} {ids}  {j.release:9} {detail}{flag}")
