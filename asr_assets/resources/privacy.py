"""Erasure, retention and the audit log, on top of the object store and the publisher.

Erasure order matters for resumability: everything derived from the catalog (stage tables,
result partitions, ledgers, published records, caches, raw audio) goes first and the catalog
rows last. The catalog is how an erasure finds a student's activities, so a crash half-way
leaves the catalog intact and the next run of the same erasure finishes the job.

Result partitions are rewritten through the same commit as a run (`_commit_rewritten_partition`,
the one place this module calls it): new data files land beside the old ones, `_SUCCESS` switches
readers, the old files go. Readers never see a partition with and without the student at once.
"""

from __future__ import annotations

import io
import json
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asr_assets.core.ledger import ledger_table
from asr_assets.core.models import PartitionManifest
from asr_assets.core.privacy import (
    AUDIT_PREFIX,
    RECEIPT_PREFIX,
    AuditAction,
    AuditEvent,
    ErasureReceipt,
    RetentionPolicy,
    SubjectKind,
    column_values,
    drop_rows,
    expired,
    scrub_json,
    subject_hash,
)
from asr_assets.core.storage import (
    CATALOG_PREFIX,
    LEDGER_PREFIX,
    RESULT_TABLES,
    ledger_key,
    result_prefix,
    run_token,
    staging_prefix,
)
from asr_assets.core.tables import RESULT_SCHEMAS
from asr_assets.observability.logging import get_logger
from asr_assets.resources.object_store import ObjectNotFoundError, ObjectStore
from asr_assets.resources.publisher import Publisher

log = get_logger(__name__)

_DATE_SEGMENT = "activity_date="


def _partition_of(key: str) -> str | None:
    for segment in key.split("/"):
        if segment.startswith(_DATE_SEGMENT):
            value = segment[len(_DATE_SEGMENT) :]
            return value.removesuffix(".jsonl").removesuffix(".parquet")
    return None


def _read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


@dataclass
class _Subject:
    """What an erasure found in the catalog: the subject's activities, by day, and their audio."""

    activity_ids: set[str] = field(default_factory=set)
    partitions: set[str] = field(default_factory=set)
    audio_keys: set[str] = field(default_factory=set)
    catalog_files: set[str] = field(default_factory=set)


@dataclass
class ErasureCounts:
    removed: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, what: str, amount: int = 1) -> None:
        if amount:
            self.removed[what] += amount


def _commit_rewritten_partition(
    store: ObjectStore,
    staged: dict[str, str],
    final_prefixes: dict[str, str],
    manifest: dict[str, object],
) -> dict[str, str]:
    """The single call into the partition commit a run uses (re-point here if it changes)."""
    return store.commit_partition(staged, final_prefixes, manifest)


class Eraser:
    """Removes every trace of one student or one activity from the store and the publisher."""

    def __init__(self, store: ObjectStore, publisher: Publisher | None, hash_key: bytes) -> None:
        self.store = store
        self.publisher = publisher
        self.hash_key = hash_key

    # -- discovery ---------------------------------------------------------------------------

    def _find(self, kind: SubjectKind, value: str) -> _Subject:
        subject = _Subject()
        if kind is SubjectKind.ACTIVITY:
            subject.activity_ids.add(value)
        for info in self.store.iter_objects(f"{CATALOG_PREFIX}/"):
            if not info.key.endswith(".parquet"):
                continue
            table = _read_parquet(self.store.read_bytes(info.key))
            column = kind.value
            if column not in table.column_names:
                continue
            rows = [r for r in table.to_pylist() if r.get(column) == value]
            if not rows:
                continue
            partition = _partition_of(info.key)
            if partition:
                subject.partitions.add(partition)
            subject.catalog_files.add(info.key)
            for row in rows:
                subject.activity_ids.add(str(row["activity_id"]))
                if row.get("audio_key"):
                    subject.audio_keys.add(str(row["audio_key"]))
        if kind is SubjectKind.ACTIVITY:
            # An activity the catalog no longer lists may still have rows downstream.
            subject.partitions |= self._partitions_holding(subject.activity_ids)
        return subject

    def _partitions_holding(self, activity_ids: set[str]) -> set[str]:
        found: set[str] = set()
        for info in self.store.iter_objects("stages/activities/"):
            partition = _partition_of(info.key)
            if partition and info.key.endswith(".parquet"):
                table = _read_parquet(self.store.read_bytes(info.key))
                if set(column_values(table, "activity_id")) & activity_ids:
                    found.add(partition)
        return found

    # -- the erasure -------------------------------------------------------------------------

    def erase(
        self, kind: SubjectKind, value: str, *, requested_by: str, reason: str
    ) -> ErasureReceipt:
        started = datetime.now(UTC)
        hashed = subject_hash(self.hash_key, kind, value)
        subject = self._find(kind, value)
        counts = ErasureCounts()
        run_id = f"erasure-{hashed[:12]}-{started.strftime('%Y%m%dT%H%M%S')}"
        ids = subject.activity_ids
        derived_keys: set[str] = set()
        clip_hashes: set[str] = set()
        for partition in sorted(subject.partitions):
            derived_keys |= self._erase_stage_tables(partition, ids, counts, clip_hashes)
            self._erase_results(partition, ids, run_id, counts)
            self._erase_ledgers(partition, ids, counts)
            self._sweep_prefix("results/", partition, ids, counts)
            if self.publisher is not None and ids:
                counts.add("published_records", self.publisher.retract(partition, sorted(ids)))
            # Whatever sink wrote JSONL into the store before (a local run, another publisher).
            self._sweep_jsonl("published/", partition, ids, counts)
        derived_keys |= self._emissions_of(clip_hashes)
        for key in sorted(derived_keys):
            counts.add("cache_objects", self._delete(key))
        still_used = self._audio_still_referenced(subject, ids)
        for key in sorted(subject.audio_keys - still_used):
            counts.add("audio_objects", self._delete(key))
        # Last: the catalog is how a resumed erasure finds what is left.
        for key in sorted(subject.catalog_files):
            counts.add("catalog_rows", self._filter_parquet(key, "activity_id", ids))
        receipt = self._write_receipt(
            kind, hashed, subject, counts, requested_by=requested_by, reason=reason
        )
        log.info(
            "erasure_completed",
            subject_kind=kind.value,
            subject_hash=hashed[:16],
            partitions=len(subject.partitions),
            status="ok",
            **{f"removed_{k}": v for k, v in sorted(counts.removed.items())},
        )
        return receipt

    def _delete(self, key: str) -> int:
        existed = self.store.exists(key)
        self.store.delete(key)
        self.store.forget_cached(key)
        return int(existed)

    def _filter_parquet(self, key: str, column: str, ids: set[str]) -> int:
        """Rewrite one Parquet object without the subject's rows; returns rows dropped."""
        try:
            table = _read_parquet(self.store.read_bytes(key))
        except ObjectNotFoundError:
            return 0
        kept, dropped = drop_rows(table, column, ids)
        if dropped:
            self.store.write_table(key, kept)
            self.store.forget_cached(key)
        return dropped

    def _erase_stage_tables(
        self, partition: str, ids: set[str], counts: ErasureCounts, clip_hashes: set[str]
    ) -> set[str]:
        """Filter every stage table of the day; returns the cache keys the dropped rows named."""
        derived: set[str] = set()
        for info in list(self.store.iter_objects("stages/")):
            if _partition_of(info.key) != partition or not info.key.endswith(".parquet"):
                continue
            table = _read_parquet(self.store.read_bytes(info.key))
            if "activity_id" not in table.column_names:
                continue
            mine = table.filter(
                pc.is_in(table.column("activity_id"), value_set=pa.array(sorted(ids)))
            )
            derived.update(column_values(mine, "clip_key"))
            derived.update(column_values(mine, "emissions_key"))
            clip_hashes.update(column_values(mine, "clip_sha256"))
            counts.add("stage_rows", self._filter_parquet(info.key, "activity_id", ids))
        return derived

    def _emissions_of(self, clip_hashes: set[str]) -> set[str]:
        """Emissions of the subject's clips under every model, not only the last one used."""
        if not clip_hashes:
            return set()
        names = {f"{sha}.npz" for sha in clip_hashes}
        return {
            info.key
            for info in self.store.iter_objects("cache/emissions/")
            if info.key.rsplit("/", 1)[-1] in names
        }

    def _erase_results(
        self, partition: str, ids: set[str], run_id: str, counts: ErasureCounts
    ) -> None:
        """Rewrite the committed partition without the subject, through the run's commit."""
        payload = self.store.read_committed(result_prefix("letter_scores", partition))
        if payload is None:
            return
        manifest = PartitionManifest.model_validate(payload)
        tables: dict[str, pa.Table] = {}
        dropped = 0
        for name in RESULT_TABLES:
            table = self.store.read_table(manifest.files[name], RESULT_SCHEMAS[name])
            tables[name], removed = drop_rows(table, "activity_id", ids)
            dropped += removed
        if not dropped:
            return
        staged: dict[str, str] = {}
        for name in RESULT_TABLES:
            staged[name] = f"{staging_prefix(run_id, partition)}/{name}.parquet"
            self.store.write_table(staged[name], tables[name])
        now = datetime.now(UTC)
        ledger = ledger_key(partition, run_id)
        self.store.write_table(
            ledger,
            ledger_table(run_id, manifest.model, tables["phrase_results"], tables["errors"], now),
        )
        phrases_scored = tables["phrase_results"].num_rows
        phrases_errored = tables["errors"].num_rows
        rewritten = manifest.model_copy(
            update={
                "run_id": run_id,
                "committed_at": now,
                "files": {},
                "row_counts": {name: tables[name].num_rows for name in RESULT_TABLES},
                "phrases_in": phrases_scored + phrases_errored,
                "phrases_scored": phrases_scored,
                "phrases_errored": phrases_errored,
                "ledger": ledger,
            }
        )
        _commit_rewritten_partition(
            self.store,
            staged,
            {name: result_prefix(name, partition) for name in RESULT_TABLES},
            rewritten.model_dump(mode="json"),
        )
        counts.add("result_rows", dropped)
        counts.add("partitions_recommitted")

    def _erase_ledgers(self, partition: str, ids: set[str], counts: ErasureCounts) -> None:
        """Every ledger file of the day, history included: history must forget the subject too."""
        for info in list(self.store.iter_objects(f"{LEDGER_PREFIX}/")):
            if _partition_of(info.key) == partition and info.key.endswith(".parquet"):
                counts.add("ledger_rows", self._filter_parquet(info.key, "activity_id", ids))

    def _sweep_prefix(
        self, prefix: str, partition: str, ids: set[str], counts: ErasureCounts
    ) -> None:
        """Whatever else the day holds under `prefix`: staging leftovers, quarantine reports."""
        for info in list(self.store.iter_objects(prefix)):
            if _partition_of(info.key) != partition:
                continue
            if info.key.endswith(".parquet"):
                counts.add("other_rows", self._filter_parquet(info.key, "activity_id", ids))
            elif not info.key.endswith("/_SUCCESS"):
                self._scrub_json_object(info.key, ids, counts)

    def _sweep_jsonl(
        self, prefix: str, partition: str, ids: set[str], counts: ErasureCounts
    ) -> None:
        for info in list(self.store.iter_objects(prefix)):
            if _partition_of(info.key) != partition or not info.key.endswith(".jsonl"):
                continue
            lines = self.store.read_bytes(info.key).decode().splitlines()
            kept = [
                line
                for line in lines
                if line.strip() and str(json.loads(line).get("activity_id")) not in ids
            ]
            removed = sum(1 for line in lines if line.strip()) - len(kept)
            if not removed:
                continue
            if kept:
                self.store.write_bytes(info.key, "".join(f"{line}\n" for line in kept).encode())
            else:
                self.store.delete(info.key)
            self.store.forget_cached(info.key)
            counts.add("published_records", removed)

    def _scrub_json_object(self, key: str, ids: set[str], counts: ErasureCounts) -> None:
        try:
            payload = json.loads(self.store.read_bytes(key))
        except (ValueError, UnicodeDecodeError, ObjectNotFoundError):
            return
        scrubbed, removed = scrub_json(payload, ids)
        if removed:
            self.store.write_json(key, scrubbed)
            counts.add("report_entries", removed)

    def _audio_still_referenced(self, subject: _Subject, ids: set[str]) -> set[str]:
        """Recordings another activity's catalog rows still point at (a shared long recording)."""
        used: set[str] = set()
        for key in subject.catalog_files:
            table = _read_parquet(self.store.read_bytes(key))
            others, _ = drop_rows(table, "activity_id", ids)
            used.update(column_values(others, "audio_key"))
        return used & subject.audio_keys

    def _write_receipt(
        self,
        kind: SubjectKind,
        hashed: str,
        subject: _Subject,
        counts: ErasureCounts,
        *,
        requested_by: str,
        reason: str,
    ) -> ErasureReceipt:
        key = f"{RECEIPT_PREFIX}/{hashed}.json"
        now = datetime.now(UTC)
        runs: list[datetime] = []
        partitions = set(subject.partitions)
        activity_hashes = {
            subject_hash(self.hash_key, SubjectKind.ACTIVITY, a) for a in subject.activity_ids
        }
        removed = dict(counts.removed)
        if self.store.exists(key):
            previous = ErasureReceipt.model_validate(self.store.read_json(key))
            runs = list(previous.runs)
            partitions |= set(previous.partitions)
            activity_hashes |= set(previous.activity_hashes)
            for what, amount in previous.removed.items():
                removed[what] = removed.get(what, 0) + amount
        receipt = ErasureReceipt(
            subject_kind=kind,
            subject_hash=hashed,
            activity_hashes=sorted(activity_hashes),
            partitions=sorted(partitions),
            removed=dict(sorted(removed.items())),
            requested_by=requested_by,
            reason=reason,
            runs=[*runs, now],
            completed_at=now,
        )
        self.store.write_json(key, receipt.model_dump(mode="json"))
        return receipt


# -- retention -------------------------------------------------------------------------------


@dataclass
class RetentionReport:
    dry_run: bool
    doomed: dict[str, list[str]]  # data class -> keys deleted (or, in a dry run, to delete)
    bytes_by_class: dict[str, int]

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(keys) for name, keys in self.doomed.items()}


def sweep_retention(
    store: ObjectStore, policy: RetentionPolicy, *, now: datetime, dry_run: bool
) -> RetentionReport:
    """Delete what each data class keeps past its TTL or its size cap (or only list it)."""
    doomed: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for rule in policy.rules:
        objects = [
            (info.key, info.size, info.last_modified)
            for prefix in rule.prefixes
            for info in store.iter_objects(prefix)
        ]
        by_key = {key: size for key, size, _ in objects}
        keys = expired(objects, rule, now)
        doomed[rule.data_class.value] = keys
        sizes[rule.data_class.value] = sum(by_key[k] for k in keys)
        if not dry_run:
            for key in keys:
                store.delete(key)
                store.forget_cached(key)
        log.info(
            "retention_swept",
            data_class=rule.data_class.value,
            objects=len(keys),
            bytes=sizes[rule.data_class.value],
            dry_run=dry_run,
            status="ok",
        )
    return RetentionReport(dry_run=dry_run, doomed=doomed, bytes_by_class=sizes)


# -- the audit log ---------------------------------------------------------------------------


def audit_key(event: AuditEvent) -> str:
    """One new object per event, never overwritten: append-only on any object store."""
    stamp = event.at.astimezone(UTC)
    return (
        f"{AUDIT_PREFIX}/date={stamp.date().isoformat()}/"
        f"{stamp.strftime('%H%M%S%f')}-{run_token(event.channel)}-{uuid.uuid4().hex}.json"
    )


def record_access(store: ObjectStore, event: AuditEvent) -> str:
    """Append one audit event; the jobs API and the CLI call this on every read of audio or
    results. Returns the event's key."""
    key = audit_key(event)
    if store.exists(key):  # uuid collision: never overwrite an audit record
        raise FileExistsError(key)
    store.write_json(key, event.model_dump(mode="json"))
    return key


def read_audit(store: ObjectStore, day: str | None = None) -> list[AuditEvent]:
    prefix = f"{AUDIT_PREFIX}/date={day}/" if day else f"{AUDIT_PREFIX}/"
    return [
        AuditEvent.model_validate(store.read_json(info.key))
        for info in store.iter_objects(prefix)
        if info.key.endswith(".json")
    ]


def audit_event(
    *,
    actor: str,
    action: AuditAction,
    resource: str,
    purpose: str,
    channel: str,
    subject_hashes: Iterable[str] = (),
) -> AuditEvent:
    return AuditEvent(
        at=datetime.now(UTC),
        actor=actor,
        action=action,
        resource=resource,
        purpose=purpose,
        channel=channel,
        subject_hashes=sorted(subject_hashes),
    )
