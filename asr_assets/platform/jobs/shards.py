"""A job's files in the store: input shards, shard commits, progress record and report.

Layout under the job's output prefix `O`:

    O/_job/inputs/shard-00000.parquet   the files of shard 0 (key, size, duration_s, fields)
    O/_job/inputs/rejected.parquet      inputs refused before any workload ran, with a reason
    O/_job/inputs/_SUCCESS              the input plan (files, shards); reused by every rerun
    O/_job/staging/<run>/shard-00000.parquet   what a workload wrote, before validation
    O/shards/shard-00000/part-0.parquet + _SUCCESS   a committed shard (`_SUCCESS` written last)
    O/_job/progress.json                one small progress record, rewritten as shards finish
    O/_job/report.json                  the job report (counts, errors by reason, usage)

A shard is committed exactly when its `_SUCCESS` exists; reruns skip committed shards, so a job
killed at any point redoes at most the shards that were in flight.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from asr_assets.core.errors import ReasonCode
from asr_assets.core.storage import SUCCESS_FILE, UnsafeKeyError, run_token, validate_key
from asr_assets.platform.jobs.models import JobRequest
from asr_assets.platform.jobs.tagging import tag_objects
from asr_assets.platform.workloads.models import InputKind, WorkloadManifest
from asr_assets.resources.object_store import ObjectNotFoundError, ObjectStore

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("reason_code", pa.string()),
        pa.field("message", pa.string()),
    ]
)


class JobInputError(ValueError):
    """The job's input as a whole is unusable (empty prefix, unreadable manifest)."""


def normalize_prefix(prefix: str) -> str:
    """A store key prefix without leading/trailing '/', validated; '' is refused."""
    value = prefix.strip().strip("/")
    if value.startswith("s3://"):
        raise JobInputError("s3:// URIs are resolved by the store; give the key within it")
    validate_key(value)
    return value


def job_keys(output_prefix: str) -> dict[str, str]:
    base = normalize_prefix(output_prefix)
    return {
        "base": base,
        "inputs": f"{base}/_job/inputs",
        "inputs_success": f"{base}/_job/inputs/{SUCCESS_FILE}",
        "rejected": f"{base}/_job/inputs/rejected.parquet",
        "progress": f"{base}/_job/progress.json",
        "report": f"{base}/_job/report.json",
    }


def input_shard_key(output_prefix: str, shard: int) -> str:
    return f"{job_keys(output_prefix)['inputs']}/shard-{shard:05d}.parquet"


def staging_key(output_prefix: str, run_id: str, shard: int) -> str:
    base = job_keys(output_prefix)["base"]
    return f"{base}/_job/staging/{run_token(run_id)}/shard-{shard:05d}.parquet"


def shard_prefix(output_prefix: str, shard: int) -> str:
    return f"{job_keys(output_prefix)['base']}/shards/shard-{shard:05d}"


def shard_data_key(output_prefix: str, shard: int) -> str:
    return f"{shard_prefix(output_prefix, shard)}/part-0.parquet"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


# ---------------------------------------------------------------- inputs


def allowed_prefixes(request: JobRequest) -> list[str]:
    """Keys must lie under these: the request's `key_prefixes`, else the input prefix, else the
    manifest's own folder (a manifest may not reach into other teams' audio by default)."""
    if request.key_prefixes:
        return [normalize_prefix(p) for p in request.key_prefixes]
    if request.input_prefix is not None:
        return [normalize_prefix(request.input_prefix)]
    assert request.manifest is not None
    parent = str(PurePosixPath(request.manifest.strip("/")).parent)
    if parent in ("", "."):
        raise JobInputError("a manifest at the store root needs key_prefixes")
    return [normalize_prefix(parent)]


def under(key: str, prefixes: list[str]) -> bool:
    return any(key.startswith(f"{prefix}/") for prefix in prefixes)


def iter_candidates(
    store: ObjectStore, request: JobRequest, manifest: WorkloadManifest
) -> Iterator[dict[str, Any]]:
    """Raw input rows (`key` + fields), streamed from the prefix listing or the manifest."""
    if request.input_prefix is not None:
        if InputKind.PREFIX not in manifest.input.kinds:
            raise JobInputError(f"{manifest.ref} reads a manifest, not a prefix")
        if manifest.input.fields:
            raise JobInputError(f"{manifest.ref} needs per-file fields: give a manifest")
        prefix = normalize_prefix(request.input_prefix)
        suffixes = tuple(manifest.input.extensions)
        for info in store.iter_objects(f"{prefix}/"):
            if info.key.lower().endswith(suffixes):
                yield {"key": info.key, "_size": info.size}
        return
    if InputKind.MANIFEST not in manifest.input.kinds:
        raise JobInputError(f"{manifest.ref} reads a prefix, not a manifest")
    assert request.manifest is not None
    key = normalize_prefix(request.manifest)
    try:
        data = store.read_bytes(key)
    except ObjectNotFoundError:
        raise JobInputError(f"manifest {key} does not exist") from None
    if key.endswith(".parquet"):
        try:
            parquet = pq.ParquetFile(io.BytesIO(data))
        except (pa.ArrowInvalid, OSError) as exc:
            raise JobInputError(f"manifest {key} is not readable Parquet: {exc}") from None
        for batch in parquet.iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    for number, line in enumerate(io.BytesIO(data), start=1):
        text = line.strip()
        if not text:
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError:
            yield {"key": None, "_malformed": f"line {number} is not JSON"}
            continue
        yield row if isinstance(row, dict) else {"key": None, "_malformed": f"line {number}"}


def probe_duration(store: ObjectStore, key: str) -> float | None:
    """Seconds of audio from the file's header; None when it cannot be read (the workload will
    report why)."""
    try:
        info = sf.info(io.BytesIO(store.read_bytes(key)))
    except (sf.LibsndfileError, RuntimeError, ValueError, ObjectNotFoundError):
        return None
    return float(info.frames) / info.samplerate if info.samplerate else None


def check_row(
    row: Mapping[str, Any],
    prefixes: list[str],
    field_types: Mapping[str, pa.DataType],
    store: ObjectStore,
    probe: bool = True,
) -> tuple[dict[str, Any] | None, tuple[str, ReasonCode, str] | None]:
    """An accepted input row, or the rejection (key, reason, message)."""
    key = row.get("key")
    if row.get("_malformed") or not isinstance(key, str) or not key:
        return None, ("", ReasonCode.MALFORMED_ROW, str(row.get("_malformed") or "no key"))
    try:
        validate_key(key)
    except UnsafeKeyError as exc:
        return None, (key[:1024], ReasonCode.UNSAFE_AUDIO_KEY, str(exc))
    if not under(key, prefixes):
        return None, (key, ReasonCode.KEY_OUTSIDE_PREFIX, "key is outside the job's prefixes")
    missing = [name for name in field_types if row.get(name) is None]
    if missing:
        return None, (key, ReasonCode.MISSING_FIELD, f"missing {', '.join(missing)}")
    size = row.get("_size")
    if size is None:
        size = store.size(key)
    if size is None:
        return None, (key, ReasonCode.AUDIO_MISSING, "audio object does not exist")
    duration = probe_duration(store, key) if probe else None
    accepted = {"key": key, "size": int(size), "duration_s": duration}
    accepted.update({name: row.get(name) for name in field_types})
    return accepted, None


def input_schema(manifest: WorkloadManifest) -> pa.Schema:
    fields = [
        pa.field("key", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("duration_s", pa.float64()),
    ]
    fields.extend(pa.field(name, t) for name, t in manifest.field_types().items())
    return pa.schema(fields)


@dataclass
class InputPlan:
    """The `_job/inputs/_SUCCESS` record."""

    job_id: str
    files: int = 0
    accepted: int = 0
    shards: int = 0
    shard_size: int = 0
    bytes: int = 0
    audio_seconds: float = 0.0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    cached: bool = False

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> InputPlan:
        known = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "cached"}


def read_input_plan(store: ObjectStore, request: JobRequest) -> InputPlan | None:
    keys = job_keys(request.output_prefix)
    if not store.exists(keys["inputs_success"]):
        return None
    payload = store.read_json(keys["inputs_success"])
    return InputPlan.from_json(payload) if isinstance(payload, dict) else None


def build_inputs(
    store: ObjectStore,
    job_id: str,
    request: JobRequest,
    manifest: WorkloadManifest,
    shard_size: int,
) -> InputPlan:
    """Stream the inputs into shard tables of `shard_size` files; refused rows to `rejected`.

    Memory is one shard of rows, whatever the size of the listing or manifest. An existing plan
    of the same job is reused as it is, so a rerun sees the same shards. Probing durations reads
    each file once more (a GET per file on S3); `params.probe_durations: "false"` skips it.
    """
    existing = read_input_plan(store, request)
    if existing is not None and existing.job_id == job_id:
        existing.cached = True
        return existing
    keys = job_keys(request.output_prefix)
    prefixes = allowed_prefixes(request)
    probe = request.params.get("probe_durations", "true").lower() not in ("false", "0", "no")
    field_types = manifest.field_types()
    schema = input_schema(manifest)
    plan = InputPlan(job_id=job_id, shard_size=shard_size)
    rejected_by_reason: Counter[str] = Counter()
    rejected: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if pending:
            table = pa.Table.from_pylist(pending, schema=schema)
            store.write_table(input_shard_key(request.output_prefix, plan.shards), table)
            plan.shards += 1
            pending.clear()

    for row in iter_candidates(store, request, manifest):
        plan.files += 1
        accepted, refusal = check_row(row, prefixes, field_types, store, probe)
        if refusal is not None:
            rejected_by_reason[refusal[1].value] += 1
            rejected.append(dict(zip(REJECTED_SCHEMA.names, refusal, strict=True)))
            continue
        assert accepted is not None
        plan.accepted += 1
        plan.bytes += accepted["size"]
        plan.audio_seconds += accepted["duration_s"] or 0.0
        pending.append(accepted)
        if len(pending) >= shard_size:
            flush()
    flush()
    if plan.files == 0:
        raise JobInputError("the job's input holds no audio files")
    plan.audio_seconds = round(plan.audio_seconds, 3)
    plan.rejected_by_reason = dict(rejected_by_reason)
    # Refusals are few by nature; a manifest of nothing but bad rows is still bounded by it.
    store.write_table(keys["rejected"], pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))
    store.write_json(keys["inputs_success"], {**plan.to_json(), "committed_at": now_iso()})
    return plan


# ---------------------------------------------------------------- shard outputs


class BadOutputError(ValueError):
    """The workload's table breaks the contract (missing, unreadable, wrong schema or keys)."""


def validate_output(
    store: ObjectStore, key: str, schema: pa.Schema, input_keys: list[str]
) -> tuple[pa.Table, dict[str, int], int]:
    """The table, its errors by reason and its ok count; raises `BadOutputError`."""
    try:
        data = store.read_bytes(key)
    except ObjectNotFoundError:
        raise BadOutputError("the workload wrote no output table") from None
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadOutputError(f"output is not readable Parquet: {exc}") from None
    declared = [(f.name, f.type) for f in schema]
    written = [(f.name, f.type) for f in table.schema]
    if declared != written:
        missing = sorted({n for n, _ in declared} - {n for n, _ in written})
        raise BadOutputError(
            f"output schema does not match the manifest (missing {missing or 'none'}; "
            f"written {[n for n, _ in written][:20]})"
        )
    keys = table.column("key").to_pylist()
    if sorted(k or "" for k in keys) != sorted(input_keys):
        raise BadOutputError(
            f"output has {len(keys)} rows whose keys do not match the shard's {len(input_keys)} "
            "inputs (every input needs exactly one row)"
        )
    statuses = table.column("status").to_pylist()
    reasons = table.column("reason_code").to_pylist()
    errors: Counter[str] = Counter()
    ok = 0
    for status, reason in zip(statuses, reasons, strict=True):
        if status == "ok":
            ok += 1
        elif status == "error" and reason:
            errors[str(reason)] += 1
        else:
            raise BadOutputError(f"row status {status!r} / reason {reason!r} breaks the contract")
    return table, dict(errors), ok


def commit_shard(
    store: ObjectStore,
    output_prefix: str,
    shard: int,
    staged_key: str,
    record: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
) -> str:
    """Copy the validated table into place, then write `_SUCCESS` (the commit point).

    `tags` (see `tagging.output_tags`) go into the `_SUCCESS` record and, on S3, onto both
    objects as object tags, before the commit point so a committed shard is a tagged one.
    """
    target = shard_data_key(output_prefix, shard)
    success = f"{shard_prefix(output_prefix, shard)}/{SUCCESS_FILE}"
    store.copy(staged_key, target)
    tag_objects(store, [target], tags or {})
    payload = {**record, "shard": shard, "file": target, "committed_at": now_iso()}
    store.write_json(success, {**payload, "tags": dict(tags or {})})
    tag_objects(store, [success], tags or {})
    store.delete(staged_key)
    return target


def committed_record(store: ObjectStore, output_prefix: str, shard: int) -> dict[str, Any] | None:
    key = f"{shard_prefix(output_prefix, shard)}/{SUCCESS_FILE}"
    if not store.exists(key):
        return None
    payload = store.read_json(key)
    return payload if isinstance(payload, dict) else None


def shard_input_keys(store: ObjectStore, output_prefix: str, shard: int) -> list[str]:
    table = pq.read_table(
        io.BytesIO(store.read_bytes(input_shard_key(output_prefix, shard))), columns=["key"]
    )
    return [str(k) for k in table.column("key").to_pylist()]
