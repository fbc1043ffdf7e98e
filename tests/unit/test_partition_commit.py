"""The partition commit: one manifest switches all three tables, fenced against stale runs.

Commits are driven step by step (fence, stage, commit) so the interleavings that broke the old
protocol are reproduced exactly, and two real processes race for the same partition.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pyarrow as pa
import pytest

from asr_assets.core.storage import (
    RESULT_TABLES,
    SUCCESS_FILE,
    partition_manifest_key,
    result_prefix,
    staging_prefix,
)
from asr_assets.resources.object_store import (
    CommitConflictError,
    LocalObjectStore,
    ObjectStore,
)

DAY = "2026-11-27"
PREFIXES = {name: result_prefix(name, DAY) for name in RESULT_TABLES}


def _stage(store: ObjectStore, run_id: str) -> dict[str, str]:
    staged = {}
    for name in RESULT_TABLES:
        staged[name] = f"{staging_prefix(run_id, DAY)}/{name}.parquet"
        store.write_table(staged[name], pa.table({"run": [run_id]}))
    return staged


def _commit(store: ObjectStore, run_id: str, fence=None) -> dict[str, str]:
    return store.commit_partition(
        _stage(store, run_id), PREFIXES, {"partition": DAY, "run_id": run_id}, fence=fence
    )


def _runs_read_through_manifest(store: ObjectStore) -> set[str]:
    manifest = store.read_partition_manifest(DAY)
    assert manifest is not None
    files = manifest["files"]
    return {store.read_table(files[name]).column("run")[0].as_py() for name in RESULT_TABLES}  # type: ignore[index]


def test_one_manifest_names_all_three_tables_and_no_table_has_its_own(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    # A partition committed by the old protocol: a `_SUCCESS` per table.
    for prefix in PREFIXES.values():
        store.write_json(f"{prefix}/{SUCCESS_FILE}", {"run_id": "old"})
    keys = _commit(store, "run-1")
    manifest = store.read_partition_manifest(DAY)
    assert manifest is not None and manifest["files"] == keys and manifest["generation"] == 1
    assert partition_manifest_key(DAY) == f"{PREFIXES['letter_scores']}/{SUCCESS_FILE}"
    for name in ("phrase_results", "errors"):
        assert not store.exists(f"{PREFIXES[name]}/{SUCCESS_FILE}")
    assert _runs_read_through_manifest(store) == {"run-1"}


class _KilledAtSwitch(LocalObjectStore):
    """Dies (like a SIGKILL would, before any cleanup) at the manifest write."""

    def write_bytes_if(self, key: str, data: bytes, *, version: str | None) -> None:
        os._exit(17)


def _commit_and_die(root: str) -> None:
    store = _KilledAtSwitch(root=root, min_free_bytes=0)
    _commit(store, "run-killed")


def test_a_run_killed_before_the_switch_leaves_the_old_partition_whole(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    _commit(store, "run-1")
    process = multiprocessing.get_context("fork").Process(
        target=_commit_and_die, args=(str(tmp_path),)
    )
    process.start()
    process.join(30)
    assert process.exitcode == 17
    # The killed run copied its three files in, but readers still see run-1 in every table.
    assert _runs_read_through_manifest(store) == {"run-1"}
    assert store.exists(f"{PREFIXES['phrase_results']}/part-run-killed.parquet")


def test_a_stale_run_cannot_overwrite_a_newer_commit(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    _commit(store, "run-0")
    stale = store.commit_fence(DAY)  # run A starts
    newer = store.commit_fence(DAY)  # run B starts
    keys_b = _commit(store, "run-b", fence=newer)  # B commits first
    with pytest.raises(CommitConflictError):
        _commit(store, "run-a", fence=stale)
    manifest = store.read_partition_manifest(DAY)
    assert manifest is not None and manifest["run_id"] == "run-b" and manifest["generation"] == 2
    assert all(store.exists(key) for key in keys_b.values())
    assert _runs_read_through_manifest(store) == {"run-b"}
    # The loser removed its own copies and staging, nothing of the winner's.
    assert not store.exists(f"{PREFIXES['letter_scores']}/part-run-a.parquet")
    assert not list(store.iter_objects("results/_staging/"))


def _race(root: str, run_id: str, barrier, results) -> None:
    store = LocalObjectStore(root=root, min_free_bytes=0)
    fence = store.commit_fence(DAY)
    staged = _stage(store, run_id)
    barrier.wait(10)
    try:
        store.commit_partition(staged, PREFIXES, {"partition": DAY, "run_id": run_id}, fence=fence)
        results.put((run_id, "committed"))
    except CommitConflictError:
        results.put((run_id, "fenced"))


def test_two_concurrent_runs_one_commits_the_other_is_fenced(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        barrier = context.Barrier(2)
        results = context.Queue()
        runs = [f"run-{round_}-{side}" for side in ("x", "y")]
        processes = [
            context.Process(target=_race, args=(str(tmp_path), run, barrier, results))
            for run in runs
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
        outcomes = dict(results.get(timeout=5) for _ in runs)
        assert sorted(outcomes.values()) == ["committed", "fenced"], outcomes
        winner = next(run for run, outcome in outcomes.items() if outcome == "committed")
        store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
        manifest = store.read_partition_manifest(DAY)
        assert manifest is not None and manifest["run_id"] == winner
        assert manifest["generation"] == round_ + 1
        assert _runs_read_through_manifest(store) == {winner}
        assert sorted(p.name for p in (tmp_path / PREFIXES["errors"]).iterdir()) == [
            f"part-{winner}.parquet"
        ]


def test_commit_sweeps_stale_staging_and_orphans_but_not_fresh_ones(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    crashed = _stage(store, "run-crashed")
    orphan = f"{PREFIXES['letter_scores']}/part-run-crashed.parquet"
    store.copy(crashed["letter_scores"], orphan)
    hours_ago = time.time() - 7200
    for key in [*crashed.values(), orphan]:
        os.utime(tmp_path / key, (hours_ago, hours_ago))
    in_flight = _stage(store, "run-in-flight")  # another run staging right now
    _commit(store, "run-1")
    assert not any(store.exists(key) for key in [*crashed.values(), orphan])
    assert all(store.exists(key) for key in in_flight.values())
    assert _runs_read_through_manifest(store) == {"run-1"}


def test_symlinks_cannot_leave_the_store(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.wav").write_bytes(b"secret")
    (root / "audio").mkdir(parents=True)
    (root / "audio" / "escape").symlink_to(outside)
    (root / "audio" / "passwd.wav").symlink_to("/etc/passwd")
    (root / "audio" / "inside.wav").write_bytes(b"ok")
    (root / "audio" / "alias.wav").symlink_to(root / "audio" / "inside.wav")
    store = LocalObjectStore(root=str(root), min_free_bytes=0)
    from asr_assets.core.storage import UnsafeKeyError

    for key in ("audio/escape/secret.wav", "audio/passwd.wav"):
        with pytest.raises(UnsafeKeyError):
            store.read_bytes(key)
        with pytest.raises(UnsafeKeyError):
            store.size(key)
    with pytest.raises(UnsafeKeyError):
        store.write_bytes("audio/escape/new.wav", b"x")
    assert not (outside / "new.wav").exists()
    assert store.read_bytes("audio/alias.wav") == b"ok"  # a link that stays inside is fine


def test_a_step_retry_keeps_its_runs_first_fence(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    _commit(store, "run-0")
    first_attempt = store.run_fence(DAY, "run-a")
    _commit(store, "run-b", fence=store.run_fence(DAY, "run-b"))  # a newer run commits
    retry = store.run_fence(DAY, "run-a")  # run-a's step retry
    assert retry == first_attempt
    with pytest.raises(CommitConflictError):
        _commit(store, "run-a", fence=retry)
    assert store.read_partition_manifest(DAY)["run_id"] == "run-b"  # type: ignore[index]


def test_a_retry_after_its_own_commit_landed_is_not_a_conflict(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path), min_free_bytes=0)
    fence = store.run_fence(DAY, "run-a")
    _commit(store, "run-a", fence=fence)  # landed; say the step then failed and retried
    keys = _commit(store, "run-a", fence=fence)
    manifest = store.read_partition_manifest(DAY)
    assert manifest is not None and manifest["files"] == keys and manifest["generation"] == 1
