"""A site agent's own configuration, read from ``MEDPERF_SITE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.executor import limits
from services.executor.limits import ContainerLimits, DownloadLimits, ExtractionLimits, TaskLimits
from services.executor.progress import PROGRESS_SECONDS


class LocalDataset(BaseModel):
    """Raw data the data owner has agreed to benchmark: it never leaves the site."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    benchmark: str = Field(description="name of the benchmark this data joins once an admin approves it")
    data_path: Path
    labels_path: Path


class SiteSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDPERF_SITE_", extra="ignore")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the site's name, e.g. hospital-a")
    owner: str = Field(description="the data owner on whose behalf the agent registers and reports")
    datasets: list[LocalDataset] = Field(default_factory=list)
    committee_for: list[str] = Field(
        default_factory=list,
        description="benchmarks whose committee runs this agent: it tests candidate models on the demo data",
    )
    work_dir: Path = Field(default=Path(".medperf/site"), description="prepared data, predictions, logs, cache")
    database_url: str | None = Field(default=None, description="the site's own database; default SQLite in work_dir")
    task_timeout: float = Field(
        default=1800.0, gt=0, description="seconds a container task may run; caps a container's own timeout_seconds"
    )
    max_jobs: int = Field(default=1, ge=1, le=64, description="jobs this site runs at once")
    release: Literal["auto", "review"] = Field(
        default="auto",
        description="the data owner's consent: results leave at once (auto), or wait for "
        "`medperf result release ID` (review)",
    )
    remote_release: bool = Field(
        default=True,
        description="the data owner may also release held results and failed jobs' log tails from the web "
        "(the ingress authenticates them and relays their consent to this agent); false: only at the site, "
        "with `medperf result release` / `medperf job release-log`",
    )
    retry_seconds: float = Field(
        default=5.0, gt=0, description="wait before retrying after an infrastructure failure; doubles each attempt"
    )
    heartbeat_seconds: float = Field(default=10.0, gt=0, description="how often the agent says it is alive")
    ignore_model_errors: bool = Field(
        default=False, description="score what a failing model did predict, and mark the result partial"
    )
    share_log_tails: bool = Field(
        default=False,
        description="send each failed job's log tail with its failure; otherwise a tail (it may quote patient "
        "data) leaves the site only when the data owner releases it: `medperf job release-log ID`",
    )
    full_check_days: float = Field(
        default=7.0,
        gt=0,
        description="before a job only changed files are read again; every byte once per this many days",
    )
    progress_seconds: float = Field(
        default=PROGRESS_SECONDS,
        ge=0.5,
        le=3600,
        description="at most one job.progress event per job this often, besides one at each stage change",
    )
    # Bounds on what containers bring and do (services/executor/limits.py has the reasons for each
    # default). Sizes take a unit: 4GiB, 500MB, or a plain number of bytes.
    extract_max_bytes: ByteSize = Field(
        default=ByteSize(limits.EXTRACT_MAX_BYTES), gt=0, description="bytes one hosted tarball may unpack to"
    )
    extract_max_members: int = Field(
        default=limits.EXTRACT_MAX_MEMBERS, gt=0, description="files, directories and links in one hosted tarball"
    )
    extract_max_ratio: float = Field(
        default=limits.EXTRACT_MAX_RATIO,
        gt=1,
        description="bytes unpacked per byte of tarball (checked once 64 MiB are written)",
    )
    download_max_bytes: ByteSize = Field(
        default=ByteSize(limits.DOWNLOAD_MAX_BYTES), gt=0, description="size of one hosted file"
    )
    download_deadline: float = Field(
        default=limits.DOWNLOAD_DEADLINE, gt=0, description="seconds for the whole download of one hosted file"
    )
    results_max_bytes: ByteSize = Field(
        default=ByteSize(limits.RESULTS_MAX_BYTES),
        gt=0,
        description="size of the results.json or statistics.json a container writes",
    )
    task_cpus: float | None = Field(
        default=None,
        gt=0,
        description="CPUs one task may use (as docker --cpus); default three quarters of the engine's, at least 1",
    )
    output_max_bytes: ByteSize = Field(
        default=ByteSize(limits.OUTPUT_MAX_BYTES), gt=0, description="bytes one task's output directories may hold"
    )
    task_memory: ByteSize = Field(
        default=ByteSize(limits.TASK_MEMORY),
        ge=6 * 2**20,
        description="memory one task may use, its /tmp, $HOME and /dev/shm included (no swap beyond it)",
    )
    task_pids: int = Field(default=limits.TASK_PIDS, gt=0, description="processes and threads one task may run")
    task_shm_size: ByteSize = Field(
        default=ByteSize(limits.TASK_SHM_SIZE), gt=0, description="/dev/shm of a task whose container asks no shm_size"
    )
    task_tmp_size: ByteSize = Field(default=ByteSize(limits.TASK_TMP_SIZE), gt=0, description="a task's writable /tmp")
    task_home_size: ByteSize = Field(
        default=ByteSize(limits.TASK_HOME_SIZE), gt=0, description=f"a task's writable $HOME ({limits.TASK_HOME})"
    )
    task_gpus: str = Field(
        default="all",
        pattern=r"^(all|none|\d+(,\d+)*)$",
        description="GPUs a task may be given when its container asks: 'all', 'none', or device IDs '0,1'",
    )
    read_only_root: bool = Field(
        default=True, description="tasks cannot write to their image's filesystem, only to /tmp, $HOME and outputs"
    )
    pull_images: bool = Field(
        default=False,
        description="pull a missing image by its digest (image@image_digest) from the registry its name points to",
    )

    @property
    def key_path(self) -> Path:
        """The site's Ed25519 signing key (mode 0600): created at the agent's first start, never sent."""
        return self.work_dir / "signing.key"

    def extraction_limits(self) -> ExtractionLimits:
        return ExtractionLimits(int(self.extract_max_bytes), self.extract_max_members, self.extract_max_ratio)

    def download_limits(self) -> DownloadLimits:
        return DownloadLimits(int(self.download_max_bytes), self.download_deadline)

    def task_limits(self) -> TaskLimits:
        return TaskLimits(self.task_cpus, int(self.output_max_bytes), int(self.results_max_bytes))

    def container_limits(self) -> ContainerLimits:
        return ContainerLimits(
            memory=int(self.task_memory),
            pids=self.task_pids,
            shm_size=int(self.task_shm_size),
            tmp_size=int(self.task_tmp_size),
            home_size=int(self.task_home_size),
            read_only_root=self.read_only_root,
            gpus=self.task_gpus,
        )

    def database(self) -> str:
        if self.database_url:
            return self.database_url
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.work_dir / 'agent.db').resolve()}"
