"""Peak memory of the letter-scores quality gate as the day grows.

The gate is the one step that reads a whole result partition. This benchmark commits a
synthetic partition of N phrases (four letters each, one insertion in fifty phrases, one error
in a hundred) to a local store, then runs exactly what the gate runs on it, in a fresh process
per size so that no size inherits another's heap. It prints the peak RSS the gate added over
the process's RSS before the gate began (VmHWM reset through /proc/self/clear_refs), and the
seconds it took.

python -m bench.gate_memory                          # 10k and 100k phrases
python -m bench.gate_memory --sizes 1000,100000 --json bench/results/gate-memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

DAY = "2026-11-27"
SHA = "a" * 64
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def synthetic_partition(n_phrases: int, seed: int = 0) -> dict[str, pa.Table]:
    """A valid partition in the result contract, built column by column (no Python rows)."""
    from asr_assets.core.tables import RESULT_SCHEMAS

    rng = np.random.default_rng(seed)
    n_letters = 4
    activity = np.array([f"{i // 10:032x}" for i in range(n_phrases)], dtype=object)
    phrase_index = (np.arange(n_phrases) % 10).astype(np.int32)
    picks = rng.integers(0, 26, size=(n_phrases, n_letters))
    letter_grid = np.array(list(LETTERS), dtype=object)[picks]
    texts = np.array([" ".join(row) for row in letter_grid], dtype=object)
    rows = n_phrases * n_letters
    letter_activity = np.repeat(activity, n_letters)
    letter_phrase = np.repeat(phrase_index, n_letters)
    letter_index = np.tile(np.arange(n_letters, dtype=np.int32), n_phrases)
    start = letter_index * 0.2
    model = {
        "model_name": pa.array(["demo"] * rows),
        "model_version": pa.array(["1"] * rows),
        "model_sha256": pa.array([SHA] * rows),
    }
    statuses = np.where(rng.random(rows) < 0.1, "substituted", "correct").astype(object)
    letters = pa.table(
        {
            "activity_id": pa.array(letter_activity, pa.string()),
            "phrase_index": pa.array(letter_phrase, pa.int32()),
            "letter_index": pa.array(letter_index, pa.int32()),
            "expected": pa.array(letter_grid.reshape(-1), pa.string()),
            "recognized": pa.array(letter_grid.reshape(-1), pa.string()),
            "status": pa.array(statuses, pa.string()),
            "confidence": pa.array(rng.random(rows).astype(np.float32), pa.float32()),
            "start_s": pa.array(start, pa.float64()),
            "end_s": pa.array(start + 0.15, pa.float64()),
            "alignment_score": pa.array(rng.random(rows).astype(np.float32), pa.float32()),
            "unaligned_reason": pa.nulls(rows, pa.string()),
            **model,
        },
        schema=RESULT_SCHEMAS["letter_scores"],
    )
    inserted_at = np.arange(0, n_phrases, 50)
    inserted = letters.take(pa.array(inserted_at * n_letters)).set_column(
        5, "status", pa.array(["inserted"] * len(inserted_at), pa.string())
    )
    inserted = inserted.set_column(3, "expected", pa.nulls(len(inserted_at), pa.string()))
    letters = pa.concat_tables([letters, inserted.cast(letters.schema)])
    errored = np.arange(n_phrases) % 100 == 99
    kept = ~errored
    n_kept = int(kept.sum())
    day = date.fromisoformat(DAY)
    phrase_model = {k: v.slice(0, n_kept) for k, v in model.items()}
    phrases = pa.table(
        {
            "activity_id": pa.array(activity[kept], pa.string()),
            "phrase_index": pa.array(phrase_index[kept], pa.int32()),
            "tenant_id": pa.array(["tenant-a"] * n_kept),
            "activity_date": pa.array([day] * n_kept, pa.date32()),
            "expected_text": pa.array(texts[kept], pa.string()),
            "transcript": pa.array(texts[kept], pa.string()),
            "n_expected": pa.array(np.full(n_kept, n_letters, np.int32)),
            "n_correct": pa.array(np.full(n_kept, n_letters, np.int32)),
            "n_inserted": pa.array(np.zeros(n_kept, np.int32)),
            "accuracy": pa.array(np.ones(n_kept)),
            "duration_s": pa.array(np.full(n_kept, 1.5)),
            "inference_ms": pa.array(np.full(n_kept, 5.0)),
            "alignment_ms": pa.array(np.full(n_kept, 1.0)),
            "alignment_method": pa.array(["ctc_forced"] * n_kept),
            "engine": pa.array(["local"] * n_kept),
            **phrase_model,
        },
        schema=RESULT_SCHEMAS["phrase_results"],
    )
    # Errored phrases have no letter rows.
    keep_letters = np.concatenate([np.repeat(kept, n_letters), kept[inserted_at]])
    letters = letters.filter(pa.array(keep_letters))
    n_err = int(errored.sum())
    errors = pa.table(
        {
            "activity_id": pa.array(activity[errored], pa.string()),
            "phrase_index": pa.array(phrase_index[errored], pa.int32()),
            "tenant_id": pa.array(["tenant-a"] * n_err),
            "activity_date": pa.array([day] * n_err, pa.date32()),
            "stage": pa.array(["phrase_audio"] * n_err),
            "reason_code": pa.array(["audio_empty"] * n_err),
            "message": pa.array(["generated"] * n_err),
        },
        schema=RESULT_SCHEMAS["errors"],
    )
    return {"letter_scores": letters, "phrase_results": phrases, "errors": errors}


def commit(root: Path, n_phrases: int) -> None:
    from asr_assets.core.models import ModelInfo, PartitionManifest
    from asr_assets.core.storage import RESULT_TABLES, result_prefix, staging_prefix
    from asr_assets.resources.object_store import LocalObjectStore

    store = LocalObjectStore(root=str(root))
    tables = synthetic_partition(n_phrases)
    staged = {}
    for name in RESULT_TABLES:
        staged[name] = f"{staging_prefix('bench', DAY)}/{name}.parquet"
        store.write_table(staged[name], tables[name])
    manifest = PartitionManifest(
        partition=DAY,
        run_id="bench",
        committed_at=datetime.now(UTC),
        files={name: f"{result_prefix(name, DAY)}/part-0.parquet" for name in tables},
        row_counts={name: table.num_rows for name, table in tables.items()},
        model=ModelInfo(name="demo", version="1", sha256=SHA),
        phrases_in=n_phrases,
        phrases_scored=tables["phrase_results"].num_rows,
        phrases_errored=tables["errors"].num_rows,
    )
    store.commit_partition(
        staged,
        {name: result_prefix(name, DAY) for name in RESULT_TABLES},
        manifest.model_dump(mode="json"),
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(root: Path) -> dict[str, float]:
    """Run the gate's reading and validation once; peak RSS above the starting RSS."""
    from asr_assets.checks.checks import validate_committed_letter_scores
    from asr_assets.checks.resources import DataQualityResource
    from asr_assets.resources.object_store import LocalObjectStore

    store = LocalObjectStore(root=str(root))
    quality = DataQualityResource()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    _, outcomes = validate_committed_letter_scores(store, quality, DAY)
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    failed = [o.check for o in outcomes if not o.passed]
    if failed:
        raise SystemExit(
            f"the synthetic partition failed {failed}: "
            + "; ".join(f.describe() for o in outcomes for f in o.failures)
        )
    return {"gate_s": round(seconds, 2), "gate_peak_mib": round((peak - before) / 1024, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)), flush=True)
        return
    figures = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="gate-memory-") as tmp:
            commit(Path(tmp), size)
            child = subprocess.run(
                [sys.executable, "-m", "bench.gate_memory", "--child", tmp],
                check=False,
                capture_output=True,
                text=True,
            )
            if child.returncode:
                raise SystemExit(f"the gate failed on {size} phrases:\n{child.stderr[-3000:]}")
            result = {"phrases": size, **json.loads(child.stdout.strip().splitlines()[-1])}
        figures.append(result)
        print(
            f"{size:>8,} phrases: gate peak +{result['gate_peak_mib']:,.1f} MiB over its "
            f"starting RSS, {result['gate_s']:.2f} s",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps({"gate": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
