"""Children's-data privacy: keyed subject hashes, row filtering, retention and audit records.

Pure logic only (tables and records in, tables and records out); the store-facing work of an
erasure, a retention sweep and the audit log lives in `resources/privacy.py`.

Why a keyed hash (HMAC-SHA256) rather than a plain one: student and activity identifiers come
from a small, guessable space, so a plain sha256 of one is reversible by enumeration. Receipts
and audit records carry `subject_hash` only; whoever holds the key (ASR_PRIVACY_HASH_KEY) can
answer "was student X erased?" by hashing X again, nobody else can list who was erased.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

#: Minimum key length: a short key is as guessable as no key.
MIN_HASH_KEY_BYTES = 16

PRIVACY_PREFIX = "privacy"
RECEIPT_PREFIX = f"{PRIVACY_PREFIX}/erasures"
AUDIT_PREFIX = f"{PRIVACY_PREFIX}/audit"


class PrivacyConfigError(ValueError):
    """The privacy configuration cannot work (no key, a key too short, a bad policy)."""


class SubjectKind(StrEnum):
    STUDENT = "student_id"
    ACTIVITY = "activity_id"


def subject_hash(key: bytes, kind: SubjectKind | str, value: str) -> str:
    """HMAC-SHA256 of `kind:value`, hex; the kind keeps a student and an activity id apart."""
    if len(key) < MIN_HASH_KEY_BYTES:
        raise PrivacyConfigError(
            f"the privacy hash key must be at least {MIN_HASH_KEY_BYTES} bytes"
        )
    return hmac.new(key, f"{SubjectKind(kind).value}:{value}".encode(), hashlib.sha256).hexdigest()


def drop_rows(table: pa.Table, column: str, values: Iterable[str]) -> tuple[pa.Table, int]:
    """`table` without the rows whose `column` is in `values`, and how many were dropped."""
    wanted = sorted(set(values))
    if column not in table.column_names or not wanted or table.num_rows == 0:
        return table, 0
    hit = pc.fill_null(pc.is_in(table.column(column), value_set=pa.array(wanted)), False)
    kept = table.filter(pc.invert(hit))
    return kept, table.num_rows - kept.num_rows


def column_values(table: pa.Table, column: str) -> list[str]:
    if column not in table.column_names:
        return []
    return [str(v) for v in table.column(column).to_pylist() if v is not None]


class ErasureReceipt(BaseModel):
    """What an erasure removed; stored under `privacy/erasures/<subject_hash>.json`.

    No identifier in clear: the subject and its activities appear as keyed hashes only. One
    receipt per subject, rewritten by each run of the erasure (idempotent: a second run
    finds nothing left and says so in `runs`).
    """

    model_config = ConfigDict(frozen=True)

    subject_kind: SubjectKind
    subject_hash: str
    activity_hashes: list[str]
    partitions: list[str]
    removed: dict[str, int]
    requested_by: str
    reason: str
    runs: list[datetime]
    completed_at: datetime


class DataClass(StrEnum):
    """What the store holds, by sensitivity (docs/privacy.md has the full classification)."""

    RAW_AUDIO = "raw_audio"  # children's voices: the most sensitive class
    AUDIO_CACHE = "audio_cache"  # decoded clips (FLAC), derived from raw audio
    EMISSIONS_CACHE = "emissions_cache"  # CTC log-probabilities per clip
    STAGE_TABLES = "stage_tables"  # working tables between stages
    AUDIT_LOG = "audit_log"


class RetentionRule(BaseModel):
    """Objects of one data class under `prefixes` live `ttl_days`; caches also get a size cap."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_class: DataClass
    prefixes: list[str] = Field(min_length=1)
    ttl_days: float = Field(gt=0)
    max_bytes: int | None = Field(default=None, gt=0)


class RetentionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: list[RetentionRule]


DEFAULT_RETENTION = RetentionPolicy(
    rules=[
        RetentionRule(data_class=DataClass.RAW_AUDIO, prefixes=["audio/"], ttl_days=90),
        RetentionRule(
            data_class=DataClass.AUDIO_CACHE,
            prefixes=["cache/audio/"],
            ttl_days=14,
            max_bytes=20 * 1024**3,
        ),
        RetentionRule(
            data_class=DataClass.EMISSIONS_CACHE,
            prefixes=["cache/emissions/"],
            ttl_days=14,
            max_bytes=50 * 1024**3,
        ),
        RetentionRule(data_class=DataClass.STAGE_TABLES, prefixes=["stages/"], ttl_days=30),
        RetentionRule(data_class=DataClass.AUDIT_LOG, prefixes=[f"{AUDIT_PREFIX}/"], ttl_days=400),
    ]
)


def expired(
    objects: Iterable[tuple[str, int, datetime]], rule: RetentionRule, now: datetime
) -> list[str]:
    """Keys past the rule's TTL, then the oldest of the rest until the class fits its size cap.

    `objects` are (key, size, last_modified). Oldest first, so a cache under pressure loses
    what was least recently written, not what a run is reading right now.
    """
    cutoff = now - timedelta(days=rule.ttl_days)
    ordered = sorted(objects, key=lambda item: (item[2], item[0]))
    doomed = [key for key, _, modified in ordered if modified < cutoff]
    if rule.max_bytes is not None:
        remaining = [(key, size) for key, size, modified in ordered if modified >= cutoff]
        total = sum(size for _, size in remaining)
        for key, size in remaining:
            if total <= rule.max_bytes:
                break
            doomed.append(key)
            total -= size
    return doomed


class AuditAction(StrEnum):
    READ_RESULTS = "read_results"
    READ_AUDIO = "read_audio"
    ERASE = "erase"
    RETENTION_SWEEP = "retention_sweep"


class AuditEvent(BaseModel):
    """One access to children's data: who, what, when, why. Subjects appear only hashed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    actor: str = Field(min_length=1, max_length=200)
    action: AuditAction
    resource: str = Field(description="A partition, a key prefix or a job id; never an id.")
    purpose: str = Field(min_length=1, max_length=500)
    channel: str = Field(description="cli, api or job")
    subject_hashes: list[str] = Field(default_factory=list)


ERASED = "[erased]"


def scrub_json(payload: object, identifiers: set[str]) -> tuple[object, int]:
    """`payload` with every record that names one of `identifiers` removed, and how many.

    Used on JSON the store keeps beside tables (quarantine reports carry sample rows): a dict
    inside a list that holds an identifier as a value is dropped whole (it is that subject's
    row); a bare identifier string elsewhere is replaced by a marker.
    """
    if isinstance(payload, dict):
        out: dict[str, object] = {}
        count = 0
        for key, value in payload.items():
            out[key], removed = scrub_json(value, identifiers)
            count += removed
        return out, count
    if isinstance(payload, list):
        kept: list[object] = []
        count = 0
        for item in payload:
            if isinstance(item, dict) and any(
                isinstance(v, str) and v in identifiers for v in item.values()
            ):
                count += 1
                continue
            value, removed = scrub_json(item, identifiers)
            kept.append(value)
            count += removed
        return kept, count
    if isinstance(payload, str) and payload in identifiers:
        return ERASED, 1
    return payload, 0
