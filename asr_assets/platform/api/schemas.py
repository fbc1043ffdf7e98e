"""Request and response bodies of the jobs API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from asr_assets.platform.jobs.models import JobState, JobUsage, Priority
from asr_assets.platform.tenancy.usage import GroupBy, UsageRow

TagKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")]
TagValue = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]
Location = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00-\x1f\x7f]+$")
]
RESERVED_TAG_PREFIXES = ("asr", "dagster")


class JobSubmission(BaseModel):
    """A job: one workload over an input prefix or a manifest, results under an output prefix."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workload": "letter-scoring:1",
                    "manifest": "s3://audio-bucket/team-a/manifests/2026-11-27.jsonl",
                    "output_prefix": "s3://audio-bucket/team-a/results/2026-11-27/",
                    "priority": "normal",
                    "tags": {"project": "reading-check"},
                }
            ]
        },
    )

    workload: Annotated[
        str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}:[0-9]+(\.[0-9]+){0,2}$")
    ] = Field(description="`name:version`; `letter-scoring:1` resolves to the newest 1.x")
    input_prefix: Location | None = Field(default=None, description="prefix of audio files")
    manifest: Location | None = Field(default=None, description="JSONL or Parquet manifest")
    output_prefix: Location = Field(description="where result shards and the report go")
    priority: Priority = Priority.NORMAL
    params: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)
    callback_url: (
        Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\x00-\x20\x7f]+$")]
        | None
    ) = Field(default=None, description="POSTed a signed JSON body when the job finishes")
    name: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")] | None
    ) = Field(default=None, description="client job name, unique per tenant (an idempotency key)")

    @model_validator(mode="after")
    def _shape(self) -> JobSubmission:
        if (self.input_prefix is None) == (self.manifest is None):
            raise ValueError("give exactly one of input_prefix or manifest")
        for key in self.tags:
            if key.split(".")[0].split("-")[0].lower() in RESERVED_TAG_PREFIXES:
                raise ValueError(f"tag {key!r} uses a reserved prefix (asr, dagster)")
        return self


class Progress(BaseModel):
    done: int
    failed: int
    total: int
    percent: float


class Usage(JobUsage):
    estimated_cost: float = 0.0
    currency: str = "USD"


class JobLinks(BaseModel):
    self: str
    logs: str
    page: str = Field(description="the status page, signed so it opens in a browser for a while")
    run: str | None = Field(default=None, description="the Dagster run in the Dagster UI")


class Job(BaseModel):
    job_id: str
    name: str | None = None
    tenant: str
    workload: str
    priority: Priority
    state: JobState
    failure_reason: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress
    usage: Usage
    errors_by_reason: dict[str, int] = Field(default_factory=dict)
    failed_shards: list[int] = Field(default_factory=list)
    results_prefix: str | None = None
    run_id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    callback: str | None = Field(default=None, description="none, pending, delivered or failed")
    links: JobLinks


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(default=None, description="pass as `cursor` for more")
    page: str = Field(description="the tenant's job list for a browser, signed for a while")


class JobLogs(BaseModel):
    job_id: str
    run_id: str | None
    lines: list[str]


class UsageReport(BaseModel):
    tenant: str | None
    start: date | None
    end: date | None
    group_by: GroupBy
    currency: str
    rows: list[UsageRow]


class Problem(BaseModel):
    detail: str


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, Check]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$")]
    team: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")] = (
        "default"
    )
    cost_center: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
    ] = "default"
    allowed_prefixes: list[Location] = Field(min_length=1, max_length=50)
    max_active_jobs: int | None = Field(default=None, ge=1, le=10_000)
    max_files_per_job: int | None = Field(default=None, ge=1, le=100_000_000)
    audio_hours_per_day: float | None = Field(default=None, gt=0, le=1_000_000)
    is_admin: bool = False


class IssuedKey(BaseModel):
    tenant: str
    key_id: str
    api_key: str = Field(description="shown once; only its hash is stored")


class TenantCreated(IssuedKey):
    callback_secret: str = Field(description="verifies completion callbacks; shown once")
