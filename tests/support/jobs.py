"""Platform-job test helpers: a temporary instance and store, and scripted hostile workloads."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.platform.jobs import JobState, JobStatus, status

TERMINAL = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELED}
REPO = Path(__file__).resolve().parents[2]
SAMPLE_STORE = REPO / "data" / "sample-store"


@dataclass
class JobEnv:
    home: Path
    store: Path
    workloads: Path
    instance: dg.DagsterInstance


def write_instance_yaml(home: Path, coordinator: str = "DefaultRunCoordinator") -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n"
        "  module: dagster._core.run_coordinator\n"
        f"  class: {coordinator}\n"
    )


@pytest.fixture
def job_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    home, store, workloads = tmp_path / "home", tmp_path / "store", tmp_path / "workloads"
    write_instance_yaml(home)
    store.mkdir()
    workloads.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("ASR_DATA_ROOT", str(store))
    monkeypatch.setenv("ASR_WORKLOAD_DIRS", str(workloads))
    monkeypatch.setenv("ASR_TORCH_THREADS", "1")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield JobEnv(home, store, workloads, instance)


def wait_for(job_id: str, instance: dg.DagsterInstance, timeout_s: float = 180.0) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        current = status(job_id, instance=instance)
        if current.state in TERMINAL:
            return current
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {current.state} after {timeout_s}s")
        time.sleep(0.5)


def copy_sample_audio(store: Path, count: int) -> list[dict[str, str]]:
    """The first `count` whole-file phrases of the sample day, copied into `store/in/`."""
    import pyarrow.parquet as pq

    catalog = next((SAMPLE_STORE / "catalog").rglob("*.parquet"))
    rows = [
        r
        for r in pq.read_table(catalog).to_pylist()
        if r["audio_start_s"] is None and r["audio_key"] is not None
    ][:count]
    out = []
    for row in rows:
        source = SAMPLE_STORE / row["audio_key"]
        key = f"in/{row['audio_key']}"
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        (store / key).write_bytes(source.read_bytes())
        out.append({"key": key, "expected_text": row["expected_text"]})
    return out


def write_manifest(store: Path, key: str, rows: list[dict[str, object]]) -> None:
    path = store / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# A workload that speaks the contract with dagster-pipes alone and misbehaves on request: the
# shard's behaviour comes from params `shard_<n>` (ok | exit | hang | garbage | slow), unless the
# store holds `<prefix>/fixed`. Every launch appends to `<prefix>/launches.log`.
SCRIPTED = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import pyarrow as pa, pyarrow.parquet as pq
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        extras = pipes.extras
        root = Path(extras["store"]["root"])
        shard = int(extras["shard"])
        params = extras["params"]
        marker = root / params["prefix"]
        with open(marker / "launches.log", "a") as log:
            log.write(f"{shard} {os.getpid()}\\n")
        mode = "ok" if (marker / "fixed").exists() else params.get(f"shard_{shard}", "ok")
        keys = pq.read_table(root / extras["input_key"]).column("key").to_pylist()
        out = root / extras["output_key"]
        out.parent.mkdir(parents=True, exist_ok=True)
        if mode == "exit":
            sys.exit(3)
        if mode == "hang":
            time.sleep(600)
        if mode == "garbage":
            out.write_bytes(b"not parquet at all")
            sys.exit(0)
        if mode == "slow":
            time.sleep(float(params.get("slow_s", "1.5")))
        for i, _ in enumerate(keys):
            pipes.report_custom_message({"kind": "progress", "done": i + 1, "total": len(keys)})
        table = pa.table({
            "key": pa.array(keys, pa.string()),
            "status": pa.array(["ok"] * len(keys), pa.string()),
            "reason_code": pa.array([None] * len(keys), pa.string()),
            "size": pa.array([os.path.getsize(root / k) for k in keys], pa.int64()),
        })
        pq.write_table(table, out)
        pipes.report_custom_message({"kind": "summary", "files": len(keys), "ok": len(keys),
                                     "audio_seconds": 0.0, "bytes_in": 0})
    """
)


def scripted_workload(folder: Path, name: str = "scripted", timeout_s: float = 60.0) -> None:
    folder = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(SCRIPTED)
    (folder / "workload.yaml").write_text(
        textwrap.dedent(
            f"""
            name: {name}
            version: 1.0.0
            description: test workload that misbehaves on request
            owner_team: platform-tests
            command: [python, main.py]
            input: {{kinds: [prefix, manifest]}}
            output:
              - {{name: key, type: string}}
              - {{name: status, type: string}}
              - {{name: reason_code, type: string}}
              - {{name: size, type: int64}}
            shard_size: 1
            timeout_s: {timeout_s}
            """
        )
    )


def launches(store: Path, prefix: str) -> list[int]:
    log = store / prefix / "launches.log"
    if not log.exists():
        return []
    return [int(line.split()[0]) for line in log.read_text().splitlines() if line.strip()]
