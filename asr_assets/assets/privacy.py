"""The scheduled retention job: audio and caches deleted past their retention, per data class.

Thin: the sweep itself is `resources/privacy.sweep_retention` over the policy in
`core/privacy.py` (or a YAML file with the same shape). A dry run lists what would go and deletes
nothing. On S3 the store's local read cache gets its own TTL and size cap in the same run.
"""

import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import yaml

from asr_assets.core.privacy import DEFAULT_RETENTION, AuditAction, RetentionPolicy
from asr_assets.resources.object_store import ObjectStore
from asr_assets.resources.privacy import audit_event, record_access, sweep_retention
from asr_assets.resources.s3 import S3ObjectStore


class RetentionConfig(dg.Config):
    dry_run: bool = False
    policy_file: str = ""  # empty: the built-in policy (docs/privacy.md)
    local_cache_max_mb: int = 10_240
    local_cache_ttl_hours: float = 168.0


def load_policy(path: str) -> RetentionPolicy:
    if not path:
        return DEFAULT_RETENTION
    return RetentionPolicy.model_validate(yaml.safe_load(Path(path).read_text()))


@dg.op(
    description="Delete raw audio, cached clips, emissions and stage tables past their "
    "retention (per data class); dry_run only lists them.",
    tags={"asr/privacy": "retention"},
)
def retention_sweep(
    context: dg.OpExecutionContext, config: RetentionConfig, store: ObjectStore
) -> dg.Output[dict[str, int]]:
    report = sweep_retention(
        store, load_policy(config.policy_file), now=datetime.now(UTC), dry_run=config.dry_run
    )
    pruned = 0
    if isinstance(store, S3ObjectStore) and not config.dry_run:
        pruned = store.prune_local_cache(
            max_bytes=config.local_cache_max_mb * 1024 * 1024,
            ttl_s=config.local_cache_ttl_hours * 3600,
            now=time.time(),
        )
    record_access(
        store,
        audit_event(
            actor=f"dagster-run:{context.run_id}",
            action=AuditAction.RETENTION_SWEEP,
            resource="store",
            purpose="dry run" if config.dry_run else "scheduled retention",
            channel="job",
        ),
    )
    return dg.Output(
        report.counts,
        metadata={
            "dry_run": config.dry_run,
            "objects_by_class": dg.MetadataValue.json(report.counts),
            "bytes_by_class": dg.MetadataValue.json(report.bytes_by_class),
            "local_cache_blobs_pruned": pruned,
        },
    )


@dg.job(description="Privacy retention: see docs/privacy.md for the data classes and periods.")
def privacy_retention() -> None:
    retention_sweep()


def retention_schedule(running: bool) -> dg.ScheduleDefinition:
    """Daily at 03:00 UTC; running by default where the data is real (aws), stopped locally."""
    return dg.ScheduleDefinition(
        job=privacy_retention,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING
        if running
        else dg.DefaultScheduleStatus.STOPPED,
    )
