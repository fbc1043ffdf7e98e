"""The object store interface and its local-filesystem implementation.

Assets, the sensor and the result commit protocol are written against `ObjectStore`; the local
store below and the S3 store (aws environment) implement it, as hooli's `FileSystem` does.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from asr_assets.core.storage import (
    STAGING_ROOT,
    SUCCESS_FILE,
    UnsafeKeyError,
    partition_manifest_key,
    run_token,
    staging_prefix,
    validate_key,
)
from asr_assets.core.tables import ParquetSink
from asr_assets.observability.logging import get_logger

log = get_logger(__name__)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory and rename: readers never see a partial file."""
    for attempt in range(3):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            break
        except FileNotFoundError:
            # Another process's delete removed the (then empty) directory in between.
            if attempt == 2:
                raise
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


# Staging and copies of a commit in progress are seconds to minutes old; an hour is crashed.
DEFAULT_STALE_AFTER_S = 3600.0
FENCE_FILE = "_FENCE.json"


class PreconditionFailedError(RuntimeError):
    """A conditional write found the object at another version than the caller expected."""


class CommitConflictError(RuntimeError):
    """Another run committed the partition after this run took its fence: this commit loses."""


@dataclass(frozen=True)
class CommitFence:
    """A run's fencing token for one partition: the manifest version and generation it saw."""

    partition: str
    version: str | None  # None: the partition had never been committed
    generation: int
    files: dict[str, str]  # the files that manifest named (removed once the new one is in)


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


@dataclass(frozen=True)
class StoredTable:
    """A stored Parquet table, read batch by batch.

    Stages read their input this way so that what they hold is the compressed file (a few bytes
    per phrase) and one batch of decoded rows, never the day as Python objects.
    """

    file: pq.ParquetFile
    schema: pa.Schema | None = None

    @property
    def num_rows(self) -> int:
        return int(self.file.metadata.num_rows)

    @property
    def file_schema(self) -> pa.Schema:
        """The schema as stored (before any cast to `schema`)."""
        return self.file.schema_arrow

    def read(self, columns: Sequence[str] | None = None, *, batch_rows: int = 16_384) -> pa.Table:
        """The stored table, or some of its columns, whole (no cast).

        Read batch by batch on one thread: a threaded whole-file read of a 100k-phrase table
        raised RSS twice as much as the table it returned, in decode buffers the pool kept.
        """
        names = list(columns) if columns is not None else self.file_schema.names
        schema = pa.schema([self.file_schema.field(name) for name in names])
        return pa.Table.from_batches(
            self.file.iter_batches(batch_size=batch_rows, columns=names, use_threads=False),
            schema=schema,
        )

    def batches(self, batch_rows: int = 4096) -> Iterator[pa.RecordBatch]:
        columns = None if self.schema is None else self.schema.names
        for batch in self.file.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch if self.schema is None else batch.select(columns).cast(self.schema)


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

    def open_table(self, key: str, schema: pa.Schema | None = None) -> StoredTable:
        """A stored table to read in record batches; its row count is known up front."""
        return StoredTable(pq.ParquetFile(io.BytesIO(self.read_bytes(key))), schema)

    def iter_table(
        self, key: str, schema: pa.Schema | None = None, *, batch_rows: int = 4096
    ) -> Iterator[pa.RecordBatch]:
        """A stored table as record batches of at most `batch_rows` rows (see `StoredTable`)."""
        return self.open_table(key, schema).batches(batch_rows)

    @contextmanager
    def table_writer(
        self, key: str, schema: pa.Schema, *, chunk_rows: int = 4096
    ) -> Iterator[ParquetSink]:
        """Rows appended to the sink become `key` when the block exits cleanly, never before.

        A block that raises writes nothing, so a reader never sees half a stage table.
        """
        sink = ParquetSink(schema, chunk_rows)
        yield sink
        self.write_bytes(key, sink.getvalue())

    def write_json(self, key: str, payload: object) -> None:
        self.write_bytes(key, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str) -> object:
        return json.loads(self.read_bytes(key))

    # -- versioned reads and conditional writes (the commit's fencing) -----------------------

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and a version token (an S3 ETag; locally a content hash), or
        None when the key does not exist."""
        try:
            data = self.read_bytes(key)
        except ObjectNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    @abstractmethod
    def write_bytes_if(self, key: str, data: bytes, *, version: str | None) -> None:
        """Write only if the key is still at `version` (None: only if it does not exist).

        Raises `PreconditionFailedError` otherwise. This is compare-and-swap: S3 `If-Match` /
        `If-None-Match: *`, locally a lock held across the compare and the rename.
        """

    # -- the partition commit -------------------------------------------------------------

    def commit_fence(self, partition_key: str) -> CommitFence:
        """The fencing token a run takes before it stages: the manifest's version now.

        A commit succeeds only if the manifest is still at this version, so a run that started
        before another run's commit (stale) cannot overwrite the newer partition.
        """
        return self._fence_at(partition_key, partition_manifest_key(partition_key))

    def run_fence(self, partition_key: str, run_id: str) -> CommitFence:
        """The run's fence, taken on its first attempt and reused by its step retries.

        A retry taking a fresh fence would see a newer run's commit as its base and overwrite
        it; keeping the first one makes a stale run stay stale across retries.
        """
        key = f"{staging_prefix(run_id, partition_key)}/{FENCE_FILE}"
        try:
            payload = self.read_json(key)
        except ObjectNotFoundError:
            fence = self.commit_fence(partition_key)
            self.write_json(key, asdict(fence))
            return fence
        assert isinstance(payload, dict)
        return CommitFence(**payload)

    def _fence_at(self, partition_key: str, manifest_key: str) -> CommitFence:
        current = self.read_versioned(manifest_key)
        if current is None:
            return CommitFence(partition_key, None, 0, {})
        payload = json.loads(current[0])
        files = payload.get("files") if isinstance(payload, dict) else None
        return CommitFence(
            partition_key,
            current[1],
            int(payload.get("generation") or 0) if isinstance(payload, dict) else 0,
            dict(files) if isinstance(files, dict) else {},
        )

    def commit_partition(
        self,
        staged: dict[str, str],
        final_prefixes: dict[str, str],
        manifest: dict[str, object],
        fence: CommitFence | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> dict[str, str]:
        """The one commit entry point: publish staged tables and switch the partition atomically.

        Data files are named by run (`part-<run_id>.parquet`), so the new files land beside the
        old ones without touching them. Then ONE object switches readers: the partition manifest
        (`results/letter_scores/activity_date=D/_SUCCESS`), naming all three tables' files,
        written last with a conditional write against `fence` (generation + 1). Readers go only
        through that manifest, so they see the old partition or the new one, never a mix of
        tables from two runs. A stale run (the manifest moved since its fence) gets
        `CommitConflictError` and removes only its own copies. After the switch, the files the
        previous manifest named are removed, and staging and orphaned part files older than
        `stale_after_s` (crashed runs) are swept. Returns the final key of each table's file.
        """
        partition = str(manifest.get("partition") or "")
        first_prefix = final_prefixes.get("letter_scores") or next(iter(final_prefixes.values()))
        manifest_key = f"{first_prefix}/{SUCCESS_FILE}"
        if fence is None:
            fence = self._fence_at(partition, manifest_key)
        run_id = str(manifest.get("run_id") or "run")
        token = run_token(run_id)
        final_keys: dict[str, str] = {}
        for table, prefix in final_prefixes.items():
            final_keys[table] = f"{prefix}/part-{token}.parquet"
            self.copy(staged[table], final_keys[table])
        generation = fence.generation + 1
        payload = {**manifest, "files": final_keys, "generation": generation}
        data = json.dumps(payload, indent=2, sort_keys=True, default=str).encode()
        try:
            self.write_bytes_if(manifest_key, data, version=fence.version)
        except PreconditionFailedError as exc:
            current = self.read_versioned(manifest_key)
            theirs = json.loads(current[0]) if current is not None else {}
            if theirs.get("run_id") == run_id and theirs.get("generation") == generation:
                pass  # our own write landed and only its answer was lost: committed
            else:
                named = set((theirs.get("files") or {}).values())
                for key in final_keys.values():
                    if key not in named:
                        self.delete(key)
                for key in staged.values():
                    self.delete(key)
                raise CommitConflictError(
                    f"partition {partition} moved to generation {theirs.get('generation')} "
                    f"(run {theirs.get('run_id')}) after this run took generation "
                    f"{fence.generation}: a newer commit wins, this one is discarded"
                ) from exc
        except BaseException:
            # The switch failed (full disk, outage): remove this attempt's copies unless the
            # manifest in fact names them, so a retry or rerun starts from a clean partition.
            current = self.read_versioned(manifest_key) if _readable(self, manifest_key) else None
            named = set((json.loads(current[0]).get("files") or {}).values()) if current else set()
            for key in final_keys.values():
                if key not in named:
                    _delete_quietly(self, key)
            raise
        for prefix in final_prefixes.values():
            legacy = f"{prefix}/{SUCCESS_FILE}"
            if legacy != manifest_key and self.exists(legacy):
                self.delete(legacy)  # per-table manifests of older commits: one manifest now
        keep = set(final_keys.values())
        for key in fence.files.values():
            if key not in keep:
                self.delete(key)
        for key in staged.values():
            self.delete(key)
        run_prefix = staged[next(iter(staged))].rsplit("/", 1)[0]
        if self.exists(f"{run_prefix}/{FENCE_FILE}"):
            self.delete(f"{run_prefix}/{FENCE_FILE}")
        self.sweep_stale(final_prefixes.values(), keep, stale_after_s)
        return final_keys

    def sweep_stale(self, prefixes: Iterable[str], keep: set[str], stale_after_s: float) -> int:
        """Delete crashed runs' leftovers: staging and unnamed part files older than the bound.

        The age bound is what keeps a run that is committing right now safe from the sweep:
        its staging and copies are seconds old.
        """
        cutoff = datetime.now(UTC).timestamp() - stale_after_s
        removed = 0
        for prefix in [STAGING_ROOT + "/", *(f"{p}/" for p in prefixes)]:
            for info in list(self.iter_objects(prefix)):
                if info.key in keep or info.key.endswith(f"/{SUCCESS_FILE}"):
                    continue
                if info.last_modified.timestamp() < cutoff:
                    self.delete(info.key)
                    removed += 1
        if removed:
            log.info("stale_commit_files_swept", removed=removed, status="ok")
        return removed

    def read_committed(self, prefix: str) -> dict[str, object] | None:
        """The `_SUCCESS` manifest of a committed partition, or None if it is not committed."""
        key = f"{prefix}/{SUCCESS_FILE}"
        if not self.exists(key):
            return None
        payload = self.read_json(key)
        return payload if isinstance(payload, dict) else None

    def read_partition_manifest(self, partition_key: str) -> dict[str, object] | None:
        """The partition manifest (all three tables' files), or None when not committed."""
        current = self.read_versioned(partition_manifest_key(partition_key))
        if current is None:
            return None
        payload = json.loads(current[0])
        return payload if isinstance(payload, dict) else None


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> str:
    return os.path.realpath(root)


def _stays_under(root: str, relative: str) -> bool:
    """Whether root/relative, following every symlink among its components, stays in root.

    `root` is already resolved; each component below it is checked with one lstat, and a
    symlink is resolved in full (its target may hold further links) and must land in root.
    Components that do not exist yet (a write's new file) cannot be links and pass.
    """
    current = root
    inside = root.rstrip("/") + "/"
    for part in relative.split("/"):
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            candidate = os.path.realpath(candidate)
            if candidate != root and not candidate.startswith(inside):
                return False
        current = candidate
    return True


def _readable(store: ObjectStore, key: str) -> bool:
    try:
        return store.exists(key)
    except (StoreUnavailableError, OSError):
        return False


def _delete_quietly(store: ObjectStore, key: str) -> None:
    """Best-effort cleanup on a failure path: the sweep removes what this cannot."""
    try:
        store.delete(key)
    except (StoreUnavailableError, OSError) as exc:
        log.warning("commit_cleanup_failed", error=type(exc).__name__, status="left_for_sweep")


class LocalObjectStore(ObjectStore):
    """A directory on local disk; writes are atomic (temp file + rename)."""

    root: str = Field(description="Directory that holds the store (ASR_DATA_ROOT).")
    min_free_bytes: int = Field(
        default=256 * 1024 * 1024, description="Refuse writes that would leave less free disk."
    )

    def _path(self, key: str) -> Path:
        """The key's path, refused when it (through any symlink) resolves outside the root.

        Checked on every read and write: a symlink under the root must not let a catalog row
        read `/etc/passwd` or another store, nor let a write land outside. Only the key's own
        components are inspected (the root is resolved once): `Path.resolve` re-walked every
        component of the root on every call, ~9 calls per phrase across the stages.
        """
        root = _resolved_root(self.root)
        relative = validate_key(key)
        if not _stays_under(root, relative):
            log.warning("store_key_escapes_root", status="refused")
            raise UnsafeKeyError("key resolves outside the store root (symlink)")
        return Path(root, relative)

    def write_bytes_if(self, key: str, data: bytes, *, version: str | None) -> None:
        self._path(key)  # containment first
        locks = Path(self.root).resolve() / ".tmp-locks"  # `.tmp-` names are never listed
        locks.mkdir(parents=True, exist_ok=True)
        lock_path = locks / f"{hashlib.sha256(key.encode()).hexdigest()}.lock"
        with open(lock_path, "a+b") as lock:
            # Held across compare and rename: two writers on this host serialize here.
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = self.read_versioned(key)
                found = None if current is None else current[1]
                if found != version:
                    raise PreconditionFailedError(f"{key} is at version {found}, not {version}")
                self.write_bytes(key, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

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
        # The root, not the parent: another process may remove an emptied parent meanwhile.
        free = shutil.disk_usage(_resolved_root(self.root)).free
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
        while parent != root:
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break  # not empty, or another process removed it first: both are fine
            parent = parent.parent

    def copy(self, source_key: str, target_key: str) -> None:
        target = self._path(target_key)
        source = self._path(source_key)
        if not source.is_file():
            raise ObjectNotFoundError(source_key)
        write_file_atomic(target, source.read_bytes())

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
            try:
                stat = entry.stat()
            except FileNotFoundError:
                # Deleted by another writer since the scan: no longer a key, so not listed.
                log.debug("listed_key_vanished", status="skipped")
                continue
            objects.append(
                ObjectInfo(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, tz=UTC))
            )
        next_token = page[-1][0] if len(found) > max_keys else None
        return ListPage(objects, next_token)
