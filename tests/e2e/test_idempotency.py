"""Retries and reruns neither duplicate nor lose rows: the commit protocol and the ledger.

One partition goes through three runs on a store that fails on cue at the commit point (the
write of `letter_scores/_SUCCESS`, the moment readers switch):
1. a transient store failure there: Dagster's step retry re-runs `letter_scores` in the same
   run, which rewrites the same run-named files and commits once;
2. a permanent failure there (disk full): the run fails; readers still see run 1's partition,
   and run 2's ledger file exists but no `_SUCCESS` names it;
3. a clean rerun: the partition switches to run 3, run 2's stray files are gone, the ledger keeps
   one file per run, and the current one is run 3's.
After each run, every phrase is in the committed partition exactly once.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.assets.letter_scores import verify_partition
from asr_assets.core.ledger import LEDGER_SCHEMA
from asr_assets.core.storage import ledger_key, ledger_prefix, result_prefix
from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.resources.object_store import (
    InsufficientSpaceError,
    LocalObjectStore,
    StoreUnavailableError,
)
from tests.support.data import standard_day

pytestmark = pytest.mark.e2e

DAY = "2026-11-27"
COMMIT_POINT = f"{result_prefix('letter_scores', DAY)}/_SUCCESS"
# root -> failures still to inject at the commit point (class state: Dagster copies resources)
_PLANNED: dict[str, list[Exception]] = {}


class CommitPointFaultStore(LocalObjectStore):
    """A local store whose writes of the commit point fail as planned in `_PLANNED`."""

    def write_bytes(self, key: str, data: bytes) -> None:
        planned = _PLANNED.get(self.root)
        if key == COMMIT_POINT and planned:
            raise planned.pop(0)
        super().write_bytes(key, data)


def _run(definitions: dg.Definitions, store: LocalObjectStore, instance: dg.DagsterInstance):
    return dg.materialize(
        ALL_ASSETS,
        partition_key=DAY,
        resources={**definitions.resources, "store": store},
        instance=instance,
        raise_on_error=False,
    )


def _events(result: dg.ExecuteInProcessResult, kind: str, step: str) -> int:
    return sum(e.event_type_value == kind and e.step_key == step for e in result.all_events)


def test_retries_and_reruns_neither_duplicate_nor_lose_rows(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    phrases = standard_day(tmp_path, date.fromisoformat(DAY))
    expected = [(p.activity_id, p.phrase_index) for p in phrases]
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(tmp_path), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    store = CommitPointFaultStore(root=str(tmp_path))
    partition = tmp_path / result_prefix("letter_scores", DAY)

    with dg.instance_for_test() as instance:
        # 1. A transient failure at the commit point: the step retry commits, once.
        _PLANNED[store.root] = [StoreUnavailableError("injected: PutObject SlowDown")]
        first = _run(definitions, store, instance)
        assert first.success
        assert _events(first, "STEP_UP_FOR_RETRY", "letter_scores") == 1
        check = verify_partition(store, DAY, expected)
        assert check.ok and check.lost == 0 and check.run_id == first.run_id, check
        assert sorted(p.name for p in partition.iterdir()) == [
            "_SUCCESS",
            f"part-{first.run_id}.parquet",
        ]
        assert [p.name for p in (tmp_path / ledger_prefix(DAY)).iterdir()] == [
            Path(ledger_key(DAY, first.run_id)).name
        ]

        # 2. A permanent failure at the commit point: no step retry, readers keep run 1.
        _PLANNED[store.root] = [InsufficientSpaceError("injected: disk full")]
        second = _run(definitions, store, instance)
        assert not second.success
        assert _events(second, "STEP_UP_FOR_RETRY", "letter_scores") == 0
        check = verify_partition(store, DAY, expected)
        assert check.ok and check.run_id == first.run_id, check
        assert store.exists(ledger_key(DAY, second.run_id))  # history, not current

        # 3. A clean rerun replaces the partition and clears run 2's leftovers.
        third = _run(definitions, store, instance)
        assert third.success
        check = verify_partition(store, DAY, expected)
        assert check.ok and check.run_id == third.run_id, check
        assert sorted(p.name for p in partition.iterdir()) == [
            "_SUCCESS",
            f"part-{third.run_id}.parquet",
        ]
        ledgers = {p.name for p in (tmp_path / ledger_prefix(DAY)).iterdir()}
        assert ledgers == {Path(ledger_key(DAY, run.run_id)).name for run in (first, second, third)}
        manifest = store.read_committed(result_prefix("letter_scores", DAY))
        assert manifest is not None and manifest["ledger"] == ledger_key(DAY, third.run_id)
        current = store.read_table(ledger_key(DAY, third.run_id), LEDGER_SCHEMA).to_pylist()
        assert sorted((r["activity_id"], r["phrase_index"]) for r in current) == sorted(expected)
        assert {r["run_id"] for r in current} == {third.run_id}
        assert {r["model_name"] for r in current} == {"tiny-random"}
        assert sum(r["outcome"] == "errored" for r in current) == 5
