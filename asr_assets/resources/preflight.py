"""Checks that take a second and save a failed run: before the CLI launches, and at run start.

Each problem is something no retry cures and no stage should discover halfway through: a
mistyped date, a day outside the partitions, a model directory that does not match its
checksums, a data root that is missing or read-only, a day the catalog has no rows for. The
CLI prints them as `asr: error: ...` with a hint; the `activities` asset raises them as one
permanent failure before it reads anything.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from asr_assets.inference.model_dir import ModelIntegrityError, verify_checksums
from asr_assets.resources.catalog import ActivityCatalog, DuckDBActivityCatalog
from asr_assets.resources.object_store import LocalObjectStore

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class PreflightProblem:
    """One reason not to start; `hint` says what to change."""

    check: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})"


class PreflightError(RuntimeError):
    """A run must not start: every problem found, one per line."""

    def __init__(self, problems: Sequence[PreflightProblem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def partition_problems(
    partition_keys: Sequence[str], first_day: str, last_day: str
) -> list[PreflightProblem]:
    """Dates as YYYY-MM-DD and inside [first_day, last_day]."""
    problems: list[PreflightProblem] = []
    for key in partition_keys:
        try:
            if not _DAY.fullmatch(key):
                raise ValueError(key)
            day = date.fromisoformat(key)
        except ValueError:
            problems.append(
                PreflightProblem(
                    "date_format",
                    f"{key!r} is not a date",
                    "write days as YYYY-MM-DD, e.g. 2026-11-27",
                )
            )
            continue
        if not first_day <= day.isoformat() <= last_day:
            problems.append(
                PreflightProblem(
                    "partition_range",
                    f"{key} is outside the partitions ({first_day} .. {last_day})",
                    "pick a day in that range, or set ASR_FIRST_DAY to an earlier first day",
                )
            )
    return problems


def model_problems(model_dir: str | None) -> list[PreflightProblem]:
    """The model directory matches its SHA256SUMS (the engine checks again before loading)."""
    if model_dir is None:
        return []
    try:
        verify_checksums(Path(model_dir))
    except ModelIntegrityError as exc:
        return [
            PreflightProblem(
                "model_checksum",
                f"model {model_dir}: {exc}",
                "point ASR_MODEL_DIR (--model-dir) at an intact model directory",
            )
        ]
    return []


def is_permission_error(exc: BaseException) -> bool:
    """Permission denied or a read-only file system: the same on every retry."""
    return isinstance(exc, PermissionError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    )


def writable_root_problems(root: str) -> list[PreflightProblem]:
    """The local data root exists and a file can really be created in it."""
    path = Path(root)
    if not path.is_dir():
        return [
            PreflightProblem(
                "data_root",
                f"data root {path} does not exist",
                "set ASR_DATA_ROOT (--data-root) to the store directory; `asr demo` creates one",
            )
        ]
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".asr-preflight-"):
            pass
    except OSError as exc:
        if not is_permission_error(exc):
            raise
        return [
            PreflightProblem(
                "data_root",
                f"data root {path} is not writable ({os.strerror(exc.errno or 0)})",
                "use a writable directory for ASR_DATA_ROOT (--data-root)",
            )
        ]
    return []


def catalog_problems(
    catalog: ActivityCatalog, partition_keys: Sequence[str]
) -> list[PreflightProblem]:
    """The embedded catalog has files for each day (a remote one is asked by `activities`)."""
    if not isinstance(catalog, DuckDBActivityCatalog):
        return []
    problems = []
    for key in partition_keys:
        location = Path(catalog.describe_location(key))
        if not any(location.glob("*.parquet")):
            problems.append(
                PreflightProblem(
                    "catalog",
                    f"no catalog rows for {key}: nothing at {location}",
                    "check ASR_DATA_ROOT (--data-root); for a day that is empty on purpose, "
                    "asr score --allow-empty-day (activities config allow_empty_day: true)",
                )
            )
    return problems


def preflight(
    resources: Mapping[str, object],
    partition_keys: Sequence[str],
    *,
    first_day: str | None = None,
    last_day: str | None = None,
    allow_empty_day: bool = False,
) -> list[PreflightProblem]:
    """Every problem with starting a run of these partitions on these resources.

    Without `first_day`/`last_day` the range is not checked (inside a run, Dagster has already
    validated the partition keys).
    """
    problems: list[PreflightProblem] = []
    if first_day is not None and last_day is not None:
        problems += partition_problems(partition_keys, first_day, last_day)
    inference = resources.get("inference")
    problems += model_problems(getattr(inference, "model_dir", None))
    store = resources.get("store")
    root_problems = (
        writable_root_problems(store.root) if isinstance(store, LocalObjectStore) else []
    )
    problems += root_problems
    catalog = resources.get("catalog")
    if isinstance(catalog, ActivityCatalog) and not allow_empty_day and not problems:
        problems += catalog_problems(catalog, partition_keys)
    return problems
