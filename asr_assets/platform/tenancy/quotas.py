"""Quota checks at submission. A breach names the limit and when retrying can help."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from asr_assets.platform.tenancy.models import JobRecord, Tenant
from asr_assets.platform.tenancy.usage import audio_seconds_on

ACTIVE_STATES = ("SUBMITTING", "QUEUED", "IN_PROGRESS")
# A job slot frees when a job finishes; the client should poll again after about this long.
ACTIVE_RETRY_AFTER_S = 30


class QuotaExceededError(Exception):
    def __init__(self, message: str, retry_after_s: int | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def active_jobs(session: Session, tenant: str) -> int:
    return int(
        session.scalar(
            select(func.count(JobRecord.job_id)).where(
                JobRecord.tenant == tenant, JobRecord.state.in_(ACTIVE_STATES)
            )
        )
        or 0
    )


def check_submission(
    session: Session, tenant: Tenant, *, files: int | None, now: datetime | None = None
) -> None:
    """Raise QuotaExceededError when this submission would break one of the tenant's quotas."""
    now = now or datetime.now(UTC)
    if files is not None and files > tenant.max_files_per_job:
        # Waiting does not help: the job must be split, so no Retry-After.
        raise QuotaExceededError(
            f"job has {files} files; the quota is {tenant.max_files_per_job} files per job",
            None,
        )
    active = active_jobs(session, tenant.name)
    if active >= tenant.max_active_jobs:
        raise QuotaExceededError(
            f"{active} active jobs; the quota is {tenant.max_active_jobs}", ACTIVE_RETRY_AFTER_S
        )
    used_h = audio_seconds_on(session, tenant.name, now.date()) / 3600
    if used_h >= tenant.audio_hours_per_day:
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        raise QuotaExceededError(
            f"{used_h:.2f} audio-hours used today; the quota is {tenant.audio_hours_per_day}",
            max(1, math.ceil((midnight - now).total_seconds())),
        )
