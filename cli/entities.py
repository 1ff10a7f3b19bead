"""``medperf container|model|dataset ...``: register, list, view, edit what model and data owners
bring, and ask to join benchmarks, over the ingress's HTTP API."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cli.client import ApiError, Client
from cli.output import UsageError, add_format, confirm, connect, listing, view, waiting
from cli.testing import add_test_arguments, run_test, submit
from cli.verbs import Verbs

COLUMNS = {
    "container": ["id", "name", "owner", "state", "is_valid", "created_at"],
    "model": ["id", "name", "owner", "container_id", "state", "is_valid", "created_at"],
    "dataset": ["id", "name", "owner", "site", "state", "is_valid", "created_at"],
}


def add_commands(verbs: Verbs) -> None:
    verbs.group("container", "containers: the images that prepare data, run models and compute metrics")
    for verb, aliases in (("submit", ["register"]),):
        submit = verbs.verb(
            "container",
            verb,
            _submit_container,
            "register a container from a JSON spec or MedPerf's container_config.yaml / mlcube.yaml; "
            "hosted files without a sha256 are pinned here",
            aliases=aliases,
        )
        _name(submit)
        given = submit.add_mutually_exclusive_group(required=True)
        given.add_argument("--spec", "-s", type=Path, help="the container spec (JSON)")
        given.add_argument("--container-config", type=Path, help="MedPerf's container_config.yaml")
        given.add_argument("--mlcube", type=Path, help="an MLCube-era container's mlcube.yaml")
        submit.add_argument("--parameters-file", type=Path, help="MedPerf's parameters.yaml")
        submit.add_argument("--additional-file", metavar="URL", help="hosted additional_files tarball (or synapse:ID)")
        submit.add_argument("--additional-file-hash", metavar="SHA256", help="its sha256 (else computed here, once)")
        submit.add_argument(
            "--image-hash", metavar="SHA256", help="the image's sha256 digest (else its ID on this machine's Docker)"
        )
        submit.add_argument("--state", choices=["DEVELOPMENT", "OPERATION"], default="DEVELOPMENT")
    verbs.group("model", "models: a container that predicts, asking to join benchmarks")
    model = verbs.verb("model", "submit", _submit_model, "register a model backed by a registered container")
    _name(model)
    model.add_argument("--container", "-c", type=int, required=True, help="the container's id")
    model.add_argument("--operational", action="store_true", help="register it in OPERATION state")
    associate = verbs.verb("model", "associate", _associate, "ask for a model to join a benchmark")
    associate.add_argument("id", type=int)
    associate.add_argument("--benchmark", "-b", type=int, required=True)
    associate.add_argument(
        "--test", action="store_true", help="first run the benchmark on its demo data here, and attach the signed test"
    )
    add_test_arguments(associate)
    associate.set_defaults(kind="model")
    priority = verbs.verb(
        "model",
        "set-priority",
        _priority,
        "run this model earlier at every site (benchmark committee)",
        aliases=["set_priority"],
    )
    priority.add_argument("id", type=int)
    priority.add_argument("--benchmark", "-b", type=int, required=True)
    priority.add_argument("--priority", "-p", type=int, required=True, help="-1000..1000; higher runs first")

    verbs.group("dataset", "datasets: what a site prepared, asking to join benchmarks")
    associate = verbs.verb("dataset", "associate", _associate, "ask for a dataset to join a benchmark")
    associate.add_argument("id", type=int)
    associate.add_argument("--benchmark", "-b", type=int, required=True)
    associate.set_defaults(kind="dataset")
    operational = verbs.verb(
        "dataset",
        "set-operational",
        _operational,
        "mark a dataset ready for benchmarks (no more edits)",
        aliases=["set_operational"],
    )
    operational.add_argument("id", type=int)
    operational.add_argument("-y", "--yes", action="store_true", help="do not ask")

    for entity in ("container", "model", "dataset"):
        listed = verbs.verb(entity, "ls", _ls, f"list {entity}s")
        listed.add_argument("--mine", action="store_true", help="only yours")
        add_format(listed)
        listed.set_defaults(entity=entity)
        shown = verbs.verb(entity, "view", _view, f"one {entity}, as YAML")
        shown.add_argument("id", type=int)
        add_format(shown, "yaml")
        shown.set_defaults(entity=entity)
        if entity == "container":
            shown.add_argument(
                "--original", action="store_true", help="the MedPerf documents it was registered from, as written"
            )
    for entity in ("container", "dataset"):
        edit = verbs.verb(entity, "edit", _edit, f"change fields of a {entity} (its owner or an admin)")
        edit.add_argument("id", type=int)
        edit.add_argument(
            "--set",
            action="append",
            required=True,
            metavar="FIELD=VALUE",
            dest="changes",
            help="a field and its new value (JSON, or else text), e.g. name=ct-v2 or is_valid=false (repeat)",
        )
        edit.set_defaults(entity=entity)


def _name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="its name (or --name)")
    parser.add_argument("--name", "-n", dest="name_option", metavar="NAME")


def _chosen_name(args: argparse.Namespace) -> str:
    name = args.name_option or args.name
    if not name:
        raise UsageError("give it a name: NAME or --name NAME")
    return name


def _submit_container(args: argparse.Namespace) -> int:
    from cli.register import medperf_source, register_container, register_medperf

    name = _chosen_name(args)
    medperf_options = ("parameters_file", "additional_file", "additional_file_hash", "image_hash")
    if args.spec is not None:
        if used := [f"--{o.replace('_', '-')}" for o in medperf_options if getattr(args, o)]:
            raise UsageError(f"{', '.join(used)}: for MedPerf's formats; a JSON spec holds these itself")
        if not args.spec.is_file():
            raise UsageError(f"no spec file {args.spec}: give the container spec's path with --spec")
        container_id = register_container(connect(), name, args.spec, args.state)
    else:
        kind, path = ("mlcube", args.mlcube) if args.mlcube else ("container_config", args.container_config)
        source = medperf_source(
            path, kind, args.parameters_file, args.additional_file, args.additional_file_hash, args.image_hash
        )
        container_id = register_medperf(connect(), name, source, args.state)
    print(f"registered container {container_id}")
    return 0


def _submit_model(args: argparse.Namespace) -> int:
    state = "OPERATION" if args.operational else "DEVELOPMENT"
    model_id = connect().post("/models", {"name": _chosen_name(args), "container_id": args.container, "state": state})
    print(f"registered model {model_id['id']}; ask to join a benchmark: medperf model associate {model_id['id']} -b ID")
    return 0


def _associate(args: argparse.Namespace) -> int:
    client = connect()
    if getattr(args, "test", False):  # model associate --test: medperf test run --model ID --submit
        report = run_test(client, argparse.Namespace(**vars(args), model=args.id, container=None, data_path=None))
        if not report.passed:
            print(f"not submitted: the test failed: {report.detail}")
            return 1
        submit(client, report)
        return 0
    _request_when_known(client, args.benchmark, args.kind, args.id)
    found = client.associations(args.benchmark, kind=args.kind, component_id=args.id)
    status = found[0]["status"] if found else "PENDING"
    print(f"{args.kind} {args.id} asked to join benchmark {args.benchmark}: {status}")
    if args.kind == "model" and status == "PENDING":
        print(
            "the committee's agent, if it runs one, tests it on the demo data; otherwise the committee needs a "
            f"signed test of yours: withdraw (medperf association reject -b {args.benchmark} -m {args.id}) and ask "
            f"again with medperf model associate {args.id} -b {args.benchmark} --test"
        )
    return 0


def _request_when_known(client: Client, benchmark: int, kind: str, component: int, patience: float = 15.0) -> None:
    """Ask to join; an entity made OPERATION a moment ago may not have reached the approvals service
    yet (it learns from events): while the registry already says OPERATION, wait, showing why."""
    deadline = time.monotonic() + patience
    with waiting(f"waiting for the federation to see {kind} {component} as operational"):
        while True:
            try:
                client.request_association(benchmark, kind, component)
                return
            except ApiError as exc:
                still_travelling = exc.status == 409 and "DEVELOPMENT" in exc.message
                if not still_travelling or time.monotonic() > deadline:
                    raise
                if client.entity(kind, component).get("state") != "OPERATION":
                    raise
            time.sleep(0.2)


def _priority(args: argparse.Namespace) -> int:
    connect().set_priority(args.benchmark, args.id, args.priority)
    print(f"model {args.id} on benchmark {args.benchmark}: priority {args.priority}")
    return 0


def _operational(args: argparse.Namespace) -> int:
    client = connect()
    dataset = client.entity("dataset", args.id)
    if dataset.get("state") == "OPERATION":
        print(f"dataset {args.id} is already operational")
        return 0
    confirm(f"mark dataset {args.id} ({dataset['name']}) operational? Its fields cannot change after", args.yes)
    client.edit("dataset", args.id, state="OPERATION")
    print(f"dataset {args.id} is operational")
    return 0


def _ls(args: argparse.Namespace) -> int:
    rows = connect().entities(args.entity, mine=args.mine)
    return listing(rows, args.format, COLUMNS[args.entity])


def _view(args: argparse.Namespace) -> int:
    found = connect().entity(args.entity, args.id)
    if getattr(args, "original", False):
        return _original(found)
    if args.entity == "dataset" and isinstance(found.get("statistics"), dict) and args.format != "json":
        from shared.events import flatten_statistics

        found["statistics"] = flatten_statistics(found["statistics"])  # labels_count.pneumonia: 3
    view(found, args.format)
    return 0


def _original(container: dict[str, Any]) -> int:
    source = container.get("medperf")
    if not source:
        raise UsageError(f"container {container['id']} was registered from a JSON spec; its spec is all there is")
    for key, title in (("container_config", "container_config.yaml"), ("mlcube", "mlcube.yaml")):
        if key in source:
            print(f"# {title}\n{source[key].rstrip()}")
    if "parameters" in source:
        print(f"# parameters.yaml\n{source['parameters'].rstrip()}")
    for key in ("additional_files", "image_hash", "image_id"):
        if key in source:
            value = source[key]
            print(f"# {key}: {value['source'] + ' sha256:' + value['sha256'] if key == 'additional_files' else value}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for change in args.changes:
        field, sep, value = change.partition("=")
        if not sep or not field:
            raise UsageError(f"--set {change}: write FIELD=VALUE, e.g. --set name=new-name")
        try:
            changes[field] = json.loads(value)
        except ValueError:
            changes[field] = value
    connect().edit(args.entity, args.id, **changes)
    print(f"{args.entity} {args.id}: changed {', '.join(changes)}")
    return 0
