"""The container contract: what a registered container *is*, as data.

A container is registered as metadata only. Its image, its weights and its parameters live
elsewhere; the registry stores where to find them and the hashes that pin them. This module is
the single definition of that contract, shared by the registry (validation at registration) and
the executor (what to mount and run).
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

TaskName = Literal["prepare", "sanity_check", "statistics", "infer", "evaluate"]

#: Mount keys the executor fills in for each task. A task may declare a subset; a key outside
#: this table is a spec error, because nothing would ever be mounted there.
TASK_MOUNTS: dict[str, dict[str, frozenset[str]]] = {
    # metadata_path: a directory the preparator keeps beside the prepared data (MedPerf's RANO-style
    # preparators write it in prepare and read it back later); report_file: its progress report,
    # which stays on the site.
    "prepare": {
        "inputs": frozenset({"data_path", "labels_path", "parameters_file", "additional_files", "metadata_path"}),
        "outputs": frozenset({"output_path", "output_labels_path", "metadata_path", "report_file"}),
    },
    "sanity_check": {
        "inputs": frozenset({"data_path", "labels_path", "parameters_file", "additional_files", "metadata_path"}),
        "outputs": frozenset(),
    },
    "statistics": {
        "inputs": frozenset({"data_path", "labels_path", "parameters_file", "additional_files", "metadata_path"}),
        "outputs": frozenset({"output_path"}),
    },
    "infer": {
        "inputs": frozenset({"data_path", "parameters_file", "additional_files"}),
        "outputs": frozenset({"output_path"}),
    },
    "evaluate": {
        "inputs": frozenset({"predictions", "labels", "parameters_file", "additional_files"}),
        "outputs": frozenset({"output_path", "local_outputs_path"}),
    },
}

#: Which tasks make a container fit for each role in a benchmark.
ROLE_TASKS: dict[str, frozenset[str]] = {
    "data_preparator": frozenset({"prepare", "sanity_check", "statistics"}),
    "model": frozenset({"infer"}),
    "metrics": frozenset({"evaluate"}),
}

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HostedFile(_Strict):
    """A file hosted elsewhere: a direct-download URL or a ``synapse:`` ID, pinned by sha256, and
    optionally by its size, which sites check while the bytes arrive (the hash only at the end)."""

    source: str = Field(description="https://… direct-download URL, 'direct:<url>' or 'synapse:syn123'")
    sha256: str = Field(description="hex sha256 of the file's bytes")
    size: int | None = Field(
        default=None, ge=0, description="the file's size in bytes; a site stops a download that is not this size"
    )

    @model_serializer(mode="wrap")
    def _without_unset_size(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # Left out when not given, so specs without a size serialize as before and agents that
        # predate the field (they forbid unknown fields) still read them. No return annotation:
        # with one, pydantic would describe the output by it instead of by this model's schema.
        data = handler(self)
        if self.size is None and isinstance(data, dict):
            data.pop("size", None)
        return data

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not re.fullmatch(r"(direct:)?https?://\S+|synapse:syn\d+", value):
            raise ValueError(
                "must be a direct-download URL (http:// or https://, optionally prefixed 'direct:') "
                "or a Synapse ID such as 'synapse:syn12345'"
            )
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.lower().removeprefix("sha256:")
        if not SHA256_HEX.fullmatch(value):
            raise ValueError("must be 64 hexadecimal characters (the output of `sha256sum FILE`)")
        return value


class Mount(_Strict):
    mount_path: str = Field(description="absolute path inside the container")
    type: Literal["directory", "file"] = "directory"

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be an absolute path inside the container without '..'")
        return value


class TaskSpec(_Strict):
    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description="argv run inside the container (a string is split as a shell would); none: the image's CMD",
    )
    entrypoint: list[str] | None = Field(
        default=None,
        min_length=1,
        description="replaces the image's ENTRYPOINT (a string is one executable, as `docker run --entrypoint`)",
    )
    inputs: dict[str, Mount] = Field(default_factory=dict)
    outputs: dict[str, Mount] = Field(default_factory=dict)
    # The only run options a container may ask for; anything that widens privileges is not here.
    environment: dict[str, str] = Field(default_factory=dict)
    gpus: str | None = Field(default=None, description="'all', a count, or 'device=0,1' (as `docker run --gpus`)")
    shm_size: str | None = Field(default=None, pattern=r"^\d+[kmg]?$")
    timeout_seconds: int | None = Field(default=None, gt=0, le=7 * 24 * 3600)

    @model_serializer(mode="wrap")
    def _without_unset_run_args(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # As HostedFile.size: a spec that uses neither serializes as before, for agents that predate them.
        data = handler(self)
        if isinstance(data, dict):
            for key in ("command", "entrypoint"):
                if data.get(key, ...) is None:
                    data.pop(key)
        return data

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        # MedPerf's run_args.command is usually a string, split like a shell line (shlex).
        return _split(value, "command") if isinstance(value, str) else value

    @field_validator("entrypoint", mode="before")
    @classmethod
    def _one_executable(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_request(cls, value: Any) -> Any:
        return normalize_gpus(value)

    @field_validator("shm_size", mode="before")
    @classmethod
    def _docker_size(cls, value: Any) -> Any:
        # Docker also reads '2gb', '512MB'; one spelling is kept.
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            value = value.strip().lower()
            return value[:-1] if re.fullmatch(r"\d+[kmg]b", value) else value.removesuffix("b")
        return value


def _split(value: str, what: str) -> list[str]:
    try:
        return shlex.split(value)
    except ValueError as exc:  # an unclosed quote
        raise ValueError(f"cannot split the {what} {value!r} like a shell: {exc}") from exc


def normalize_gpus(value: Any) -> str | None:
    """MedPerf's ``gpus``: an integer (0: none), ``"all"``, a list of device ids or ``"device=0,1"``,
    as the one string ``docker run --gpus`` takes."""
    if value is None or value == "" or value == 0 or value == "0" or value == []:
        return None
    if isinstance(value, bool):
        raise ValueError("gpus must be a count, 'all', a list of device ids or 'device=0,1'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("gpus must not be negative")
        return str(value)
    if isinstance(value, list):
        ids = [str(item).strip() for item in value]
        if not all(re.fullmatch(r"[A-Za-z0-9_.:-]+", i) for i in ids):
            raise ValueError("gpus: device ids are numbers or GPU UUIDs")
        return "device=" + ",".join(ids)
    if isinstance(value, str):
        text = value.strip()
        if text == "all" or text.isdigit():
            return text
        if re.fullmatch(r"(device=)?[A-Za-z0-9_.:-]+(,[A-Za-z0-9_.:-]+)*", text):
            return text if text.startswith("device=") else f"device={text}"
    raise ValueError(f"gpus={value!r}: use a count, 'all', a list of device ids or 'device=0,1'")


class ContainerSpec(_Strict):
    """A container, registered as metadata: MedPerf's ``container_config`` plus its parameters and
    additional files. What the container must do when it runs (mount keys, the files it writes, the
    limits it runs under) is docs/containers.md."""

    image: str = Field(min_length=1, description="image name and tag, for people; runs use image_digest")
    image_digest: str = Field(
        description="sha256:… image ID, or registry manifest digest (MedPerf's image_hash); a site runs only "
        "an image whose ID or RepoDigest is this"
    )
    tasks: dict[TaskName, TaskSpec] = Field(min_length=1)
    image_archive: HostedFile | None = Field(
        default=None,
        description="a `docker save` tarball for images no registry serves; a site loads it when the image "
        "is missing and runs it only if it holds exactly image_digest",
    )
    parameters: dict[str, object] = Field(default_factory=dict, description="mounted as parameters.json")
    additional_files: HostedFile | None = Field(default=None, description="tarball extracted and mounted")

    @field_validator("image_digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not IMAGE_DIGEST.fullmatch(value):
            raise ValueError("must look like 'sha256:' followed by 64 hex characters (see `docker images --digests`)")
        return value

    @model_validator(mode="after")
    def _mounts_known(self) -> ContainerSpec:
        for task_name, task in self.tasks.items():
            for direction in ("inputs", "outputs"):
                allowed = TASK_MOUNTS[task_name][direction]
                for key in getattr(task, direction):
                    if key not in allowed:
                        raise ValueError(
                            f"tasks.{task_name}.{direction}.{key}: unknown mount key; "
                            f"allowed here: {', '.join(sorted(allowed)) or 'none'}"
                        )
            if "additional_files" in task.inputs and self.additional_files is None:
                raise ValueError(
                    f"tasks.{task_name}.inputs.additional_files is mounted but the container has no additional_files"
                )
        return self

    def missing_tasks(self, role: str) -> list[str]:
        """Tasks this container lacks to serve as ``role`` in a benchmark (empty when fit)."""
        return sorted(ROLE_TASKS[role] - set(self.tasks))
