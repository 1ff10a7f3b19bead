"""MedPerf's container formats, accepted at the edge and converted to ``ContainerSpec``.

A MedPerf user brings a ``container_config.yaml`` (or, for MLCube-era containers, an
``mlcube.yaml``), a ``parameters.yaml``, a hosted ``additional_files`` tarball and the image's
hash. ``MedPerfSource`` is those documents as submitted; ``to_spec`` turns them into the one
canonical spec the system stores and runs. The registry keeps the documents too, so that
``medperf container view --original`` shows what the owner wrote.

The conversion follows MedPerf's own reading of these files (its ``SimpleContainerParser`` and
docker runner): ``run_args`` may hold only ``command`` (a string is split like a shell line),
``entrypoint``, ``environment``, ``gpus`` and ``shm_size``; every volume names its ``mount_path``
and ``type``. An MLCube task's parameters become mounts at ``/mlcube_io<N>`` passed to the image's
entrypoint as ``<task> --<key>=<path>``, as MLCube's docker runner does.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.containers import IMAGE_DIGEST, TASK_MOUNTS, ContainerSpec, HostedFile

#: A MedPerf document as text: container configs take a few kB; parameters may take more.
DOCUMENT_CHARS = 128 * 1024
RUN_ARGS = frozenset({"command", "entrypoint", "environment", "gpus", "shm_size"})
RUNNABLE_TYPES = ("DockerImage", "DockerArchive")
REFUSED_TYPES = {
    "EncryptedDockerArchive": "encrypted images cannot run here (sites hold no decryption keys)",
    "SingularityFile": "sites run Docker or podman images only",
    "EncryptedSingularityFile": "sites run Docker or podman images only",
}


class MedPerfFormatError(ValueError):
    """A MedPerf document this system cannot run, with what to change."""


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors' aliases: a few hundred bytes of nested aliases expand to billions
    of nodes when walked (the "billion laughs"), and no MedPerf file needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:  # type: ignore[override]
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases (*name) are not accepted")
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes, what: str) -> Any:
    """A YAML (or JSON) document, safely: plain data only, no aliases."""
    try:
        return yaml.load(text, Loader=_NoAliases)  # a SafeLoader subclass
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise MedPerfFormatError(f"{what} is not valid YAML: {str(exc)[:300]}") from exc


class MedPerfSource(BaseModel):
    """The documents a MedPerf user submits for one container, as they wrote them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    container_config: str | None = Field(default=None, max_length=DOCUMENT_CHARS, description="container_config.yaml")
    mlcube: str | None = Field(default=None, max_length=DOCUMENT_CHARS, description="mlcube.yaml (MLCube-era)")
    parameters: str | None = Field(
        default=None, max_length=DOCUMENT_CHARS, description="parameters.yaml, mounted at parameters_file"
    )
    additional_files: HostedFile | None = Field(default=None, description="the hosted additional_files tarball")
    image_hash: str | None = Field(
        default=None,
        description="DockerImage: the image's sha256 digest; DockerArchive: the archive file's sha256",
    )
    image_id: str | None = Field(
        default=None, description="DockerArchive only: the ID (sha256:…) of the image inside the archive"
    )

    @model_validator(mode="after")
    def _one_config(self) -> MedPerfSource:
        if (self.container_config is None) == (self.mlcube is None):
            raise ValueError("give exactly one of container_config (container_config.yaml) or mlcube (mlcube.yaml)")
        return self

    @property
    def format(self) -> Literal["container_config", "mlcube"]:
        return "container_config" if self.container_config is not None else "mlcube"


def to_spec(source: MedPerfSource) -> ContainerSpec:
    """The canonical spec of ``source``; ``MedPerfFormatError`` says what to change."""
    if source.container_config is not None:
        fields = _from_container_config(load_yaml(source.container_config, "container_config.yaml"), source)
    else:
        fields = _from_mlcube(load_yaml(source.mlcube or "", "mlcube.yaml"), source)
    fields["parameters"] = _parameters(source.parameters)
    if source.additional_files is not None:
        fields["additional_files"] = source.additional_files.model_dump(mode="json")
    try:
        return ContainerSpec.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise MedPerfFormatError(problems) from exc


def _parameters(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    loaded = load_yaml(text, "parameters.yaml")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise MedPerfFormatError("parameters.yaml must hold a mapping (name: value lines)")
    return loaded


def _image(kind: str, image: Any, source: MedPerfSource) -> dict[str, Any]:
    if not isinstance(image, str) or not image:
        raise MedPerfFormatError("image: required (the image's name and tag, or the archive's URL)")
    if kind in REFUSED_TYPES:
        raise MedPerfFormatError(f"container_type {kind}: {REFUSED_TYPES[kind]}")
    if kind not in RUNNABLE_TYPES:
        raise MedPerfFormatError(f"container_type {kind!r}: expected one of {', '.join(RUNNABLE_TYPES)}")
    digest = _digest(source.image_hash, "image_hash")
    if kind == "DockerImage":
        if digest is None:
            raise MedPerfFormatError(
                "image_hash: required, the image's sha256 digest (`docker images --digests`, or MedPerf's hash)"
            )
        return {"image": image, "image_digest": digest}
    image_id = _digest(source.image_id, "image_id")
    if digest is None or image_id is None:
        raise MedPerfFormatError(
            "DockerArchive needs image_hash (the archive's sha256) and image_id (the image inside it); "
            "`medperf container submit` reads both from the archive"
        )
    return {"image": image, "image_digest": image_id, "image_archive": {"source": image, "sha256": digest[7:]}}


def _digest(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    value = value if value.startswith("sha256:") else f"sha256:{value}"
    if not IMAGE_DIGEST.fullmatch(value):
        raise MedPerfFormatError(f"{what}: must be 'sha256:' and 64 hexadecimal characters")
    return value


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MedPerfFormatError(f"{where}: must be a mapping")
    return value


def _task_name(name: Any) -> str:
    if name not in TASK_MOUNTS:
        raise MedPerfFormatError(
            f"tasks.{name}: this federation runs only the tasks {', '.join(TASK_MOUNTS)} "
            "(script evaluators and federated training are not supported)"
        )
    return str(name)


def _from_container_config(config: Any, source: MedPerfSource) -> dict[str, Any]:
    config = _mapping(config, "container_config.yaml")
    tasks: dict[str, Any] = {}
    for name, task in _mapping(config.get("tasks"), "tasks").items():
        where = f"tasks.{_task_name(name)}"
        task = _mapping(task, where)
        if unknown := set(task) - {"run_args", "input_volumes", "output_volumes"}:
            raise MedPerfFormatError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
        run_args = _mapping(task.get("run_args"), f"{where}.run_args")
        if unknown := set(run_args) - RUN_ARGS:
            refused = ", ".join(sorted(map(str, unknown)))
            raise MedPerfFormatError(f"{where}.run_args: {refused} not allowed (only {', '.join(sorted(RUN_ARGS))})")
        converted: dict[str, Any] = {k: v for k, v in run_args.items() if v is not None and k != "environment"}
        environment = _mapping(run_args.get("environment"), f"{where}.run_args.environment")
        converted["environment"] = {str(k): "" if v is None else str(v) for k, v in environment.items()}
        for direction, key in (("inputs", "input_volumes"), ("outputs", "output_volumes")):
            converted[direction] = {
                volume: _volume(spec, f"{where}.{key}.{volume}")
                for volume, spec in _mapping(task.get(key), f"{where}.{key}").items()
            }
        tasks[name] = converted
    if not tasks:
        raise MedPerfFormatError("tasks: required, at least one task")
    return {**_image(str(config.get("container_type", "DockerImage")), config.get("image"), source), "tasks": tasks}


def _volume(spec: Any, where: str) -> dict[str, Any]:
    spec = _mapping(spec, where)
    if "mount_path" not in spec or spec.get("type") not in ("file", "directory"):
        raise MedPerfFormatError(f"{where}: needs mount_path and type (file or directory)")
    return {"mount_path": spec["mount_path"], "type": spec["type"]}


def _from_mlcube(config: Any, source: MedPerfSource) -> dict[str, Any]:
    config = _mapping(config, "mlcube.yaml")
    docker = _mapping(config.get("docker"), "docker")
    accelerators = _mapping(config.get("platform"), "platform").get("accelerator_count") or 0
    tasks: dict[str, Any] = {}
    for name, task in _mapping(config.get("tasks"), "tasks").items():
        where = f"tasks.{_task_name(name)}"
        task = _mapping(task, where)
        parameters = _mapping(task.get("parameters"), f"{where}.parameters")
        args: list[str] = []
        mounts: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}}
        for direction in ("inputs", "outputs"):
            for key, value in _mapping(parameters.get(direction), f"{where}.parameters.{direction}").items():
                path = _mlcube_mount(value, len(args), f"{where}.parameters.{direction}.{key}")
                mounts[direction][key] = path
                args.append(f"--{key}={path['mount_path']}")
        entrypoint = task.get("entrypoint")
        command = args if entrypoint else [str(name), *args]
        tasks[name] = {
            "command": command or None,
            "entrypoint": shlex.split(entrypoint) if isinstance(entrypoint, str) else None,
            "gpus": accelerators or None,
            **mounts,
        }
    if not tasks:
        raise MedPerfFormatError("tasks: required, at least one task")
    return {**_image("DockerImage", docker.get("image"), source), "tasks": tasks}


def _mlcube_mount(value: Any, index: int, where: str) -> dict[str, Any]:
    """``{type, default}`` or a bare default path; without a type, a name with a suffix
    (``results.yaml``) is a file and anything else a directory."""
    if isinstance(value, str):
        value = {"default": value}
    value = _mapping(value, where)
    default = str(value.get("default") or "").rstrip("/")
    kind = value.get("type") or ("file" if "." in posixpath.basename(default) else "directory")
    if kind not in ("file", "directory"):
        raise MedPerfFormatError(f"{where}: type must be file or directory")
    root = f"/mlcube_io{index}"
    if kind == "file":
        return {"mount_path": f"{root}/{posixpath.basename(default) or 'file'}", "type": "file"}
    return {"mount_path": root, "type": "directory"}
