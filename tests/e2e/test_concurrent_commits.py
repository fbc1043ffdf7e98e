"""Two real Dagster runs of one partition's letter_scores at once: one coherent partition.

Each run is its own process (its own instance and store objects), started together. Whatever
the interleaving, the partition afterwards is exactly one run's, through the manifest, and every
file it names exists; a run that lost the race failed with `CommitConflictError`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from asr_assets.assets.activities import activities
from asr_assets.assets.alignments import alignments
from asr_assets.assets.letter_scores import verify_partition
from asr_assets.assets.phrase_audio import phrase_audio
from asr_assets.assets.transcripts import transcripts
from asr_assets.core.storage import RESULT_TABLES, result_prefix
from asr_assets.definitions import build_definitions
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.data import standard_day

pytestmark = pytest.mark.e2e

DAY = "2026-11-27"
RUN_LETTER_SCORES = textwrap.dedent(
    """
    import json, sys
    import dagster as dg
    from asr_assets.assets.letter_scores import letter_scores
    from asr_assets.definitions import build_definitions

    root, model, ready, go, day = sys.argv[1:6]
    definitions = build_definitions({"ASR_DATA_ROOT": root, "ASR_MODEL_DIR": model})
    open(ready, "w").close()
    import os, time
    while not os.path.exists(go):
        time.sleep(0.01)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [letter_scores], partition_key=day, resources=definitions.resources,
            instance=instance, raise_on_error=False,
        )
        def cause(error):  # a permanent error reaches Dagster wrapped in dg.Failure
            while error.cls_name == "Failure" and error.cause is not None:
                error = error.cause
            return str(error.cls_name)
        errors = [cause(e.step_failure_data.error) for e in result.all_events
                  if e.is_step_failure]
    print(json.dumps({"run_id": result.run_id, "success": result.success, "errors": errors}))
    """
)


def test_two_concurrent_runs_leave_one_coherent_partition(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    standard_day(tmp_path, date.fromisoformat(DAY))
    definitions = build_definitions(
        {"ASR_DATA_ROOT": str(tmp_path), "ASR_MODEL_DIR": str(tiny_model_dir)}
    )
    with dg.instance_for_test() as instance:
        upstream = dg.materialize(
            [activities, phrase_audio, transcripts, alignments],
            partition_key=DAY,
            resources=definitions.resources,
            instance=instance,
        )
    assert upstream.success
    store = LocalObjectStore(root=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for round_ in range(1):
        go = tmp_path / f"go-{round_}"
        ready = [tmp_path / f"ready-{round_}-{n}" for n in range(2)]
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    RUN_LETTER_SCORES,
                    str(tmp_path),
                    str(tiny_model_dir),
                    str(flag),
                    str(go),
                    DAY,
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for flag in ready
        ]
        try:
            while not all(flag.exists() for flag in ready):
                assert all(p.poll() is None for p in processes)
            go.touch()
            outputs = [
                json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1])
                for p in processes
            ]
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, 9)
        for output in outputs:
            assert output["success"] or output["errors"] == ["CommitConflictError"], output
        manifest = store.read_partition_manifest(DAY)
        assert manifest is not None
        assert manifest["run_id"] in {o["run_id"] for o in outputs if o["success"]}
        assert verify_partition(store, DAY).ok
        for table in RESULT_TABLES:
            parts = sorted(p.name for p in (tmp_path / result_prefix(table, DAY)).glob("part-*"))
            assert parts == [Path(manifest["files"][table]).name], (table, parts)  # type: ignore[index]
