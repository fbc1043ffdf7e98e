"""The publisher interface and its local JSONL sink."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
from pydantic import Field

from asr_assets.core.models import ActivityResult
from asr_assets.resources.object_store import LocalObjectStore


@dataclass
class PublishReport:
    published: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # activity_id -> reason

    @property
    def attempted(self) -> int:
        return self.published + self.duplicates + self.failed


class Publisher(dg.ConfigurableResource):
    """Delivers one record per activity; delivering the same idempotency key twice is a no-op."""

    @abstractmethod
    def publish(self, partition_key: str, records: Sequence[ActivityResult]) -> PublishReport: ...

    @abstractmethod
    def destination(self, partition_key: str) -> str: ...


class LocalJsonlPublisher(Publisher):
    """One JSONL file per partition in the local store, upserted by activity id."""

    store: LocalObjectStore
    prefix: str = Field(default="published/activity_results")

    def _key(self, partition_key: str) -> str:
        return f"{self.prefix}/activity_date={partition_key}.jsonl"

    def destination(self, partition_key: str) -> str:
        return self.store.uri(self._key(partition_key))

    def publish(self, partition_key: str, records: Sequence[ActivityResult]) -> PublishReport:
        key = self._key(partition_key)
        existing: dict[str, dict[str, object]] = {}
        if self.store.exists(key):
            for line in self.store.read_bytes(key).decode().splitlines():
                if line.strip():
                    row = json.loads(line)
                    existing[str(row["activity_id"])] = row
        report = PublishReport()
        for record in records:
            previous = existing.get(record.activity_id)
            if previous is not None and previous.get("idempotency_key") == record.idempotency_key:
                report.duplicates += 1
                continue
            existing[record.activity_id] = record.model_dump(mode="json")
            report.published += 1
        if report.published:
            body = "".join(
                json.dumps(existing[activity], sort_keys=True) + "\n"
                for activity in sorted(existing)
            )
            self.store.write_bytes(key, body.encode())
        return report
