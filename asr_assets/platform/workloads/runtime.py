"""The workload side of the Pipes contract, for workloads written in Python on this package.

A shard process is started by the platform inside a Dagster Pipes session. The job context comes
as Pipes extras (see `ShardSpec`); the process reads its shard's input table and the audio from
the store, writes exactly one output row per input key to `output_key` (Parquet, the manifest's
schema), reports progress and a summary as Pipes custom messages, and exits 0. The platform
validates the table and commits it; a workload never writes `_SUCCESS` itself.

Workloads that do not use this package (the template) speak the same contract with
`dagster-pipes` alone.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dagster_pipes import PipesContext, open_dagster_pipes

from asr_assets.core.audio import AudioPolicy, DecodedAudio, decode_audio
from asr_assets.core.errors import PhraseError, ReasonCode
from asr_assets.platform.workloads.models import parse_arrow_type
from asr_assets.resources.object_store import LocalObjectStore, ObjectNotFoundError, ObjectStore

CONTRACT_VERSION = 1
#: Exit status of a workload that notices its launcher died (it stops instead of running on).
EXIT_ORPHANED = 70
PROGRESS_EVERY_S = 1.0
OUTPUT_CHUNK_ROWS = 512


def store_from_spec(spec: Mapping[str, Any]) -> ObjectStore:
    """The store the platform named in the extras (`local` directory or `s3` bucket)."""
    kind = spec.get("kind")
    if kind == "local":
        return LocalObjectStore(root=str(spec["root"]), min_free_bytes=0)
    if kind == "s3":
        from asr_assets.resources.s3 import S3ObjectStore

        return S3ObjectStore(
            bucket=str(spec["bucket"]),
            prefix=str(spec.get("prefix") or ""),
            region_name=spec.get("region_name"),
            endpoint_url=spec.get("endpoint_url"),
            cache_dir=str(spec.get("cache_dir") or "/tmp/asr-s3-cache"),  # noqa: S108 - per pod
        )
    raise ValueError(f"unknown store kind {kind!r}")


@dataclass
class ShardSpec:
    """The job context of one shard, as passed in the Pipes extras."""

    job_id: str
    shard: int
    input_key: str
    output_key: str
    store: Mapping[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    output_columns: list[tuple[str, str]] = field(default_factory=list)
    model: str | None = None
    model_sha256: str | None = None
    tenant: str = "default"

    def output_schema(self) -> pa.Schema:
        """The manifest's output schema, passed by the platform: one source of truth."""
        return pa.schema(
            [pa.field(name, parse_arrow_type(text)) for name, text in self.output_columns]
        )

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> ShardSpec:
        if int(extras.get("asr_contract", 0)) != CONTRACT_VERSION:
            raise ValueError(f"unsupported contract version {extras.get('asr_contract')!r}")
        return cls(
            job_id=str(extras["job_id"]),
            shard=int(extras["shard"]),
            input_key=str(extras["input_key"]),
            output_key=str(extras["output_key"]),
            store=dict(extras["store"]),
            params={str(k): str(v) for k, v in dict(extras.get("params") or {}).items()},
            output_columns=[(str(n), str(t)) for n, t in extras.get("output_columns") or []],
            model=extras.get("model"),
            model_sha256=extras.get("model_sha256"),
            tenant=str(extras.get("tenant") or "default"),
        )


class ModelMismatchError(RuntimeError):
    """The model on disk is not the one the workload manifest pins."""


def model_dir_for(spec: ShardSpec) -> tuple[str, str | None]:
    """The model directory and the sha256 it must have: the manifest's pinned model, unless the
    job names its own (`params.model_dir`), which is then only verified against its checksums."""
    if spec.params.get("model_dir"):
        return spec.params["model_dir"], None
    if not spec.model:
        raise ValueError("this workload needs a model (manifest `model` or params.model_dir)")
    return spec.model, spec.model_sha256


def check_model(expected: str | None, actual: str) -> None:
    if expected is not None and expected != actual:
        raise ModelMismatchError(f"model sha256 {actual[:12]} is not the pinned {expected[:12]}")


@dataclass
class ShardTally:
    """What the shard did, reported to the platform as the `summary` message (usage and counts)."""

    files: int = 0
    ok: int = 0
    audio_seconds: float = 0.0
    bytes_in: int = 0
    errors_by_reason: Counter[str] = field(default_factory=Counter)

    def as_message(self) -> dict[str, object]:
        return {
            "kind": "summary",
            "files": self.files,
            "ok": self.ok,
            "errored": self.files - self.ok,
            "audio_seconds": round(self.audio_seconds, 3),
            "bytes_in": self.bytes_in,
            "errors_by_reason": dict(self.errors_by_reason),
        }


def load_audio(
    store: ObjectStore, key: str, tally: ShardTally, policy: AudioPolicy | None = None
) -> DecodedAudio:
    """Fetch and decode one file with the platform's validation; failures carry a reason code."""
    try:
        data = store.read_bytes(key)
    except ObjectNotFoundError:
        raise PhraseError(ReasonCode.AUDIO_MISSING, "audio object does not exist") from None
    tally.bytes_in += len(data)
    return decode_audio(data, policy=policy or AudioPolicy())


def watch_parent() -> None:
    """Exit when the launching process dies, so a killed run leaves no shard running on."""
    parent = os.getppid()
    if parent <= 1:
        return  # started by a container runtime: the pod's lifetime is the platform's business

    def loop() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


class OutputWriter:
    """Streams rows into one Parquet file in chunks, so a shard's memory stays bounded."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._buffer = io.BytesIO()
        self._writer = pq.ParquetWriter(self._buffer, schema, compression="zstd")
        self._pending: list[Mapping[str, object]] = []
        self.rows = 0

    def add(self, row: Mapping[str, object]) -> None:
        self._pending.append(row)
        self.rows += 1
        if len(self._pending) >= OUTPUT_CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self.schema))
            self._pending = []

    def finish(self) -> bytes:
        self._flush()
        self._writer.close()
        return self._buffer.getvalue()


def iter_input_rows(store: ObjectStore, key: str) -> Iterator[dict[str, object]]:
    table = pq.ParquetFile(io.BytesIO(store.read_bytes(key)))
    for batch in table.iter_batches(batch_size=256):
        yield from batch.to_pylist()


ProcessFn = Callable[
    [ShardSpec, ObjectStore, Iterable[dict[str, object]], ShardTally, PipesContext],
    Iterable[Mapping[str, object]],
]


def serve(process: ProcessFn) -> None:
    """Run one shard under Pipes: `process` maps input rows to output rows (one per input)."""
    with open_dagster_pipes() as pipes:
        watch_parent()
        spec = ShardSpec.from_extras(pipes.extras)
        schema = spec.output_schema()
        store = store_from_spec(spec.store)
        total = sum(1 for _ in iter_input_rows(store, spec.input_key))
        tally = ShardTally()
        writer = OutputWriter(schema)
        last_report = 0.0
        pipes.report_custom_message({"kind": "progress", "done": 0, "total": total})
        for row in process(spec, store, iter_input_rows(store, spec.input_key), tally, pipes):
            writer.add(row)
            tally.files += 1
            if row.get("status") == "ok":
                tally.ok += 1
            elif row.get("reason_code"):
                tally.errors_by_reason[str(row["reason_code"])] += 1
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                pipes.report_custom_message(
                    {"kind": "progress", "done": tally.files, "total": total}
                )
                last_report = now
        store.write_bytes(spec.output_key, writer.finish())
        pipes.report_custom_message({"kind": "progress", "done": tally.files, "total": total})
        pipes.report_custom_message(tally.as_message())
        pipes.log.info(f"shard {spec.shard}: {tally.ok} of {tally.files} files ok")
    sys.stdout.flush()
