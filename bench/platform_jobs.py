"""Platform jobs: Pipes launch overhead per shard, and job throughput against the daily graph.

1. Per shard: the letter-scoring workload on the same 4-file shards, launched through Dagster
   Pipes (a fresh process: interpreter, imports, model load, then validation and commit) against
   calling the same workload code in-process (model load and scoring only).
2. Per job: the sample day's whole-file phrases through a `letter-scoring:1` job (submit to
   COMPLETED: code server, run worker, one shard) against the daily graph on the same files
   (`dg.materialize` in-process), both from cold caches.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAY = "2026-11-27"


class _Log:
    def info(self, message: str) -> None:
        del message


class _Pipes:
    """What the workload uses of a Pipes context in-process: its logger."""

    log = _Log()


def _setup(root: Path) -> tuple[Path, list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    store = root / "store"
    shutil.copytree(REPO / "data" / "sample-store", store)
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    os.environ.update(
        {"DAGSTER_HOME": str(home), "ASR_DATA_ROOT": str(store), "ASR_TORCH_THREADS": "1"}
    )
    catalog = pq.read_table(next((store / "catalog").rglob("*.parquet"))).to_pylist()
    rows = [
        {"key": r["audio_key"], "expected_text": r["expected_text"]}
        for r in catalog
        if r["audio_start_s"] is None
    ]
    return store, rows


def _manifest(store: Path, key: str, rows: list[dict[str, Any]]) -> None:
    (store / key).parent.mkdir(parents=True, exist_ok=True)
    (store / key).write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run_job(instance: Any, manifest_key: str, out: str, shard_size: int) -> tuple[str, float]:
    from asr_assets.platform.jobs import JobRequest, JobState, status, submit

    started = time.perf_counter()
    job_id = submit(
        JobRequest(
            workload="letter-scoring:1",
            manifest=manifest_key,
            key_prefixes=["audio"],
            output_prefix=out,
            params={"shard_size": str(shard_size), "threads": "1"},
        ),
        instance=instance,
    )
    while status(job_id, instance=instance).state not in (
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELED,
    ):
        time.sleep(0.2)
    assert status(job_id, instance=instance).state is JobState.COMPLETED
    return job_id, time.perf_counter() - started


def main() -> None:
    import dagster as dg

    from asr_assets.definitions import ALL_ASSETS, local_resources
    from asr_assets.platform.jobs.shards import input_shard_key
    from asr_assets.platform.workloads import letter_scoring
    from asr_assets.platform.workloads.runtime import ShardSpec, ShardTally, iter_input_rows
    from asr_assets.resources.object_store import LocalObjectStore

    with tempfile.TemporaryDirectory() as scratch:
        store_dir, rows = _setup(Path(scratch))
        store = LocalObjectStore(root=str(store_dir), min_free_bytes=0)
        with dg.DagsterInstance.get() as instance:
            # 1. per-shard overhead
            _manifest(store_dir, "bench/small.jsonl", rows[:8])
            job_id, _ = _run_job(instance, "bench/small.jsonl", "bench/out-small", 4)
            piped = [
                json.loads(
                    (store_dir / f"bench/out-small/shards/shard-{s:05d}/_SUCCESS").read_text()
                )["usage"]["wall_seconds"]
                for s in range(2)
            ]
            # The in-process baseline runs in a process that has already imported its libraries
            # (as a long-lived worker would); the Pipes figure pays for them on every shard.
            import torch  # noqa: F401
            import transformers  # noqa: F401

            in_process = []
            model = str(REPO / "models" / "demo-letters")
            for shard in range(2):
                spec = ShardSpec(
                    job_id=job_id,
                    shard=shard,
                    input_key=input_shard_key("bench/out-small", shard),
                    output_key="unused",
                    store={},
                    params={"threads": "1"},
                    model=model,
                )
                started = time.perf_counter()
                list(
                    letter_scoring.process(
                        spec, store, iter_input_rows(store, spec.input_key), ShardTally(), _Pipes()
                    )
                )
                in_process.append(time.perf_counter() - started)
            pipes_s, local_s = sum(piped) / 2, sum(in_process) / 2
            print("letter-scoring:1, 4-file shards of the sample day, demo model, 1 thread")
            print(f"  in-process (same code) per shard   {local_s:6.2f} s")
            print(f"  Pipes subprocess launch per shard  {pipes_s:6.2f} s")
            print(
                f"  overhead: {pipes_s - local_s:+.2f} s per shard, ratio {pipes_s / local_s:.2f}x"
            )

            # 2. throughput against the daily graph (whole-file phrases of the sample day)
            _manifest(store_dir, "bench/day.jsonl", rows)
            _, job_s = _run_job(instance, "bench/day.jsonl", "bench/out-day", 1000)
            shutil.rmtree(store_dir / "cache", ignore_errors=True)
            started = time.perf_counter()
            result = dg.materialize(
                ALL_ASSETS,
                partition_key=DAY,
                resources=local_resources(
                    {"ASR_DATA_ROOT": str(store_dir), "ASR_TORCH_THREADS": "1"}
                ),
                instance=instance,
            )
            graph_s = time.perf_counter() - started
            assert result.success
            n = len(rows)
            print(f"\n{n} files (the sample day's whole-file phrases)")
            print(f"  daily graph (materialize) {graph_s:6.1f} s  {n / graph_s:5.2f} files/s")
            print(f"  letter-scoring:1 job      {job_s:6.1f} s  {n / job_s:5.2f} files/s")
            print(f"  job throughput / graph throughput: {graph_s / job_s:.2f}x")


if __name__ == "__main__":
    main()
