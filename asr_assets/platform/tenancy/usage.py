"""Usage per job (recorded once, when the job finishes), estimated cost, and usage reports."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

from pydantic import BaseModel
from sqlalchemy import Date, cast, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from asr_assets.platform.jobs.models import JobUsage
from asr_assets.platform.tenancy.models import Tenant, UsageRecord
from asr_assets.platform.tenancy.settings import PriceTable

GB = 1_000_000_000


def estimate_cost(usage: JobUsage, prices: PriceTable) -> float:
    """Usage priced by the configured table, rounded to a hundredth of a cent."""
    cost = (
        prices.per_job
        + usage.audio_seconds / 3600 * prices.per_audio_hour
        + usage.cpu_seconds / 3600 * prices.per_cpu_hour
        + usage.gpu_seconds / 3600 * prices.per_gpu_hour
        + usage.bytes_in / GB * prices.per_gb_in
        + usage.bytes_out / GB * prices.per_gb_out
    )
    return round(cost, 4)


def record_usage(
    session: Session,
    *,
    job_id: str,
    tenant: Tenant,
    workload: str,
    usage: JobUsage,
    finished_at: datetime | None,
    prices: PriceTable,
) -> bool:
    """Store a finished job's usage once; False when it was already recorded."""
    if session.get(UsageRecord, job_id) is not None:
        return False
    day = (finished_at or datetime.now(UTC)).astimezone(UTC).date()
    try:
        with session.begin_nested():
            session.add(
                UsageRecord(
                    job_id=job_id,
                    tenant=tenant.name,
                    team=tenant.team,
                    workload=workload,
                    day=day,
                    files=usage.files,
                    audio_seconds=usage.audio_seconds,
                    wall_seconds=usage.wall_seconds,
                    cpu_seconds=usage.cpu_seconds,
                    gpu_seconds=usage.gpu_seconds,
                    bytes_in=usage.bytes_in,
                    bytes_out=usage.bytes_out,
                    cost=estimate_cost(usage, prices),
                )
            )
    except IntegrityError:
        return False
    return True


def audio_seconds_on(session: Session, tenant: str, day: date) -> float:
    total = session.scalar(
        select(func.coalesce(func.sum(UsageRecord.audio_seconds), 0.0)).where(
            UsageRecord.tenant == tenant, UsageRecord.day == day
        )
    )
    return float(total or 0.0)


class GroupBy(StrEnum):
    TEAM = "team"
    WORKLOAD = "workload"
    DAY = "day"
    TENANT = "tenant"


class UsageRow(BaseModel):
    group: str
    jobs: int
    files: int
    audio_seconds: float
    wall_seconds: float
    cpu_seconds: float
    gpu_seconds: float
    bytes_in: int
    bytes_out: int
    estimated_cost: float


def usage_rows(
    session: Session,
    *,
    tenant: str | None,
    start: date | None,
    end: date | None,
    group_by: GroupBy,
) -> list[UsageRow]:
    """Usage summed per group over [start, end] (inclusive days, UTC)."""
    column = {
        GroupBy.TEAM: UsageRecord.team,
        GroupBy.WORKLOAD: UsageRecord.workload,
        GroupBy.DAY: cast(UsageRecord.day, Date),
        GroupBy.TENANT: UsageRecord.tenant,
    }[group_by]
    query = select(
        column.label("group"),
        func.count(UsageRecord.job_id),
        func.sum(UsageRecord.files),
        func.sum(UsageRecord.audio_seconds),
        func.sum(UsageRecord.wall_seconds),
        func.sum(UsageRecord.cpu_seconds),
        func.sum(UsageRecord.gpu_seconds),
        func.sum(UsageRecord.bytes_in),
        func.sum(UsageRecord.bytes_out),
        func.sum(UsageRecord.cost),
    ).group_by(column)
    if tenant is not None:
        query = query.where(UsageRecord.tenant == tenant)
    if start is not None:
        query = query.where(UsageRecord.day >= start)
    if end is not None:
        query = query.where(UsageRecord.day <= end)
    rows = []
    for group, jobs, files, audio, wall, cpu, gpu, b_in, b_out, cost in session.execute(
        query.order_by(column)
    ):
        rows.append(
            UsageRow(
                group=str(group),
                jobs=int(jobs),
                files=int(files or 0),
                audio_seconds=float(audio or 0),
                wall_seconds=float(wall or 0),
                cpu_seconds=float(cpu or 0),
                gpu_seconds=float(gpu or 0),
                bytes_in=int(b_in or 0),
                bytes_out=int(b_out or 0),
                estimated_cost=round(float(cost or 0), 4),
            )
        )
    return rows
