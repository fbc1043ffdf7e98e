"""The object store interface and its local-filesystem implementation.

Assets, the sensor and the result commit protocol are written against `ObjectStore`; the local
store below and the S3 store (aws environment) implement it, as hooli's `FileSystem` does.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from asr_assets.core.storage import SUCCESS_FILE, run_token, validate_key


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class ObjectNotFoundError(KeyError):
    """The key does not exist in the store."""


class StoreUnavailableError(RuntimeError):
    """The store could not be reached (after the resource's own retries)."""


class InsufficientSpaceError(OSError):
    """Writing would leave less free disk than the configured reserve."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True)
class ListPage:
    objects: list[ObjectInfo]
    next_token: str | None


class ObjectStore(dg.ConfigurableResource):
    """Keys are '/'-separated and relative; every key is validated before use."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Size in bytes, or None when the key does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list_page(
        self, prefix: str, *, start_after: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        """One page of keys under `prefix` in lexicographic order, strictly after `start_after`."""

    @abstractmethod
    def copy(self, source_key: str, target_key: str) -> None: ...

    def uri(self, key: str) -> str:
        return key

    def trace_attributes(self) -> dict[str, object]:
        """Span attributes that say which store a stage used (never credentials)."""
        return {"asr.store": type(self).__name__}

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def forget_cached(self, key: str) -> None:
        """Drop any local copy of `key` this store keeps (erasure, retention); none by default."""

    def iter_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        token = start_after
        while True:
            page = self.list_page(prefix, start_after=token)
            yield from page.objects
            if page.next_token is None:
                return
            token = page.next_token

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.iter_objects(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def write_table(self, key: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes(key, sink.getvalue())

    def read_table(self, key: str, schema: pa.Schema | None = None) -> pa.Table:
        table = pq.read_table(io.BytesIO(self.read_bytes(key)))
        return table if schema is None else table.select(schema.names).cast(schema)

    def write_json(self, key: str, payload: object) -> None:
        self.write_bytes(key, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> object:
        return json.loads(self.read_bytes(key))

    def commit_partition(
        self, staged: dict[str, str], final_prefixes: dict[str, str], manifest: dict[str, object]
    ) -> dict[str, str]:
        """Publish staged files as result partitions; `_SUCCESS` is written last.

        `staged` maps table name to a staged key and `final_prefixes` maps it to the partition
        prefix. Data files are named by run (`part-<run_id>.parquet`), so the new files land
        beside the old ones without touching them; overwriting `_SUCCESS` (an atomic put or
        rename) then switches readers from the old partition to the new one in one step, and
        only after that are the old files removed. Readers trust a partition only through its
        `_SUCCESS`, which names its files: they see the old partition or the new one, never a
        mix and never a gap. A reader still holding the old manifest when its files are removed
        gets a clean not-found, not new data. Returns the final key of each table's data file.
        """
        token = run_token(str(manifest.get("run_id") or "run"))
        final_keys: dict[str, str] = {}
        for table, prefix in final_prefixes.items():
            final_keys[table] = f"{prefix}/part-{token}.parquet"
            self.copy(staged[table], final_keys[table])
        # letter_scores last: it is the asset's own partition and the one checks read.
        for table in sorted(final_prefixes, key=lambda name: name == "letter_scores"):
            self.write_json(
                f"{final_prefixes[table]}/{SUCCESS_FILE}", {**manifest, "files": final_keys}
            )
        keep = {*final_keys.values()}
        for prefix in final_prefixes.values():
            keep.add(f"{prefix}/{SUCCESS_FILE}")
            for info in list(self.iter_objects(f"{prefix}/")):
                if info.key not in keep:
                    self.delete(info.key)
        for key in staged.values():
            self.delete(key)
        return final_keys

    def read_committed(self, prefix: str) -> dict[str, object] | None:
        """The `_SUCCESS` manifest of a committed partition, or None if it is not committed."""
        key = f"{prefix}/{SUCCESS_FILE}"
        if not self.exists(key):
            return None
        payload = self.read_json(key)
        return payload if isinstance(payload, dict) else None


class LocalObjectStore(ObjectStore):
    """A directory on local disk; writes are atomic (temp file + rename)."""

    root: str = Field(description="Directory that holds the store (ASR_DATA_ROOT).")
    min_free_bytes: int = Field(
        default=256 * 1024 * 1024, description="Refuse writes that would leave less free disk."
    )

    def _path(self, key: str) -> Path:
        return Path(self.root).resolve() / validate_key(key)

    def trace_attributes(self) -> dict[str, object]:
        return {"asr.store": "local", "asr.store.root": str(Path(self.root).resolve())}

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(key) from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free - len(data) < self.min_free_bytes:
            raise InsufficientSpaceError(
                f"writing {len(data)} bytes would leave {free - len(data)} bytes free "
                f"(reserve {self.min_free_bytes})"
            )
        write_file_atomic(path, data)

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Drop directories the delete emptied, so listings and staging areas do not accumulate.
        root = Path(self.root).resolve()
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent

    def copy(self, source_key: str, target_key: str) -> None:
        target = self._path(target_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        source = self._path(source_key)
        if not source.is_file():
            raise ObjectNotFoundError(source_key)
        temp = target.with_name(f".tmp-{target.name}")
        shutil.copyfile(source, temp)
        os.replace(temp, target)

    def list_page(
        self, prefix: str, *, start_after: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        """Keys in S3's order, visiting only the directories the page needs.

        Siblings are visited in the order of their keys (a directory sorts as `name/`, since
        every key under it starts so), directories wholly at or before `start_after` or outside
        `prefix` are skipped, and the walk stops one key past the page: a page costs about the
        same on a million objects as on a thousand, which the new-audio sensor relies on.
        """
        root = Path(self.root).resolve()
        # Walk only below the deepest directory the prefix names.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = root / validate_key(directory) if directory else root
        found: list[tuple[str, os.DirEntry[str]]] = []

        def wanted_directory(dir_key: str) -> bool:
            """`dir_key` ends with '/'; every key below it starts with it."""
            if not (dir_key.startswith(prefix) or prefix.startswith(dir_key)):
                return False
            return start_after is None or start_after < dir_key or start_after.startswith(dir_key)

        def walk(path: Path, dir_key: str) -> None:
            try:
                entries = [e for e in os.scandir(path) if not e.name.startswith(".tmp-")]
            except (FileNotFoundError, NotADirectoryError):
                return  # removed while we listed: a deleted directory holds no keys
            ordered = sorted(((e.name + "/" if e.is_dir() else e.name), e) for e in entries)
            for sort_key, entry in ordered:
                if len(found) > max_keys:
                    return
                key = dir_key + sort_key
                if sort_key.endswith("/"):
                    # Like os.walk: symlinked directories are neither listed nor followed.
                    if not entry.is_symlink() and wanted_directory(key):
                        walk(Path(entry.path), key)
                elif key.startswith(prefix) and (start_after is None or key > start_after):
                    found.append((key, entry))

        if base.is_dir():
            walk(base, f"{directory}/" if directory else "")
        page = found[:max_keys]
        objects = []
        for key, entry in page:
            stat = entry.stat()
            objects.append(
                ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, tz=UTC))
            )
        next_token = page[-1][0] if len(found) > max_keys else None
        return ListPage(objects, next_token)
