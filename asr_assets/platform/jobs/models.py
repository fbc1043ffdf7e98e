"""The jobs contract shared by the platform core (Python API) and the jobs API/CLI above it.

These pydantic models are the only shapes that cross from `asr_assets.platform.jobs` to
`asr_assets.platform.api`: the API layer never reads Dagster run records or store keys itself.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JobState(StrEnum):
    """Modeled on AWS Transcribe's batch job states, plus CANCELED."""

    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


# Mapped onto the run queue's `dagster/priority` tag (higher runs first).
DAGSTER_PRIORITY: dict[Priority, int] = {Priority.HIGH: 10, Priority.NORMAL: 0, Priority.LOW: -10}


class JobRequest(BaseModel):
    """A workload over an input prefix or a manifest, written under an output prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workload: str = Field(description="`name:version`, e.g. `letter-scoring:1` (newest 1.x)")
    input_prefix: str | None = Field(default=None, description="store key or s3:// URI prefix")
    manifest: str | None = Field(default=None, description="key/URI of a JSONL or Parquet manifest")
    output_prefix: str = Field(description="where result shards and the job report are written")
    tenant: str = "default"
    team: str = "default"
    cost_center: str = "default"
    priority: Priority = Priority.NORMAL
    params: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    job_id: str | None = Field(
        default=None, description="client-chosen id, else generated (a dynamic partition key)"
    )
    key_prefixes: list[str] = Field(
        default_factory=list,
        description="prefixes every audio key must lie under (e.g. the tenant's); empty: the "
        "input prefix, or the manifest's own folder",
    )

    @model_validator(mode="after")
    def _one_input(self) -> JobRequest:
        if (self.input_prefix is None) == (self.manifest is None):
            raise ValueError("give exactly one of input_prefix or manifest")
        return self


class JobProgress(BaseModel):
    done: int = 0
    failed: int = 0
    total: int = 0

    @property
    def percent(self) -> float:
        return 100.0 * (self.done + self.failed) / self.total if self.total else 0.0


class JobUsage(BaseModel):
    files: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0


class JobStatus(BaseModel):
    job_id: str
    state: JobState
    workload: str
    tenant: str
    failure_reason: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress = Field(default_factory=JobProgress)
    usage: JobUsage = Field(default_factory=JobUsage)
    errors_by_reason: dict[str, int] = Field(default_factory=dict)
    failed_shards: list[int] = Field(default_factory=list)
    results_prefix: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class JobResults(BaseModel):
    job_id: str
    state: JobState
    result_files: list[str] = Field(default_factory=list)
    report_key: str | None = None
    rows: int = 0
