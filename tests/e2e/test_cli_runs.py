"""`asr score` runs the real `score_letters` job on DAGSTER_HOME, quietly, and ends in the summary."""

from __future__ import annotations

import errno
import io
import json
import os
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from asr_assets.platform.cli import Console, main
from asr_assets.platform.runs import LOCATION_NAME
from asr_assets.resources.object_store import LocalObjectStore
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

pytestmark = pytest.mark.e2e

DAY = "2026-11-27"
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def store(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "store"
    write_day(
        root,
        date.fromisoformat(DAY),
        [
            PhraseSpec("act-1", 0, "b d p", wav_bytes(tone(1.5)), "audio/act-1/0.wav"),
            PhraseSpec("act-1", 1, "m n", wav_bytes(tone(1.0, freq=300)), "audio/act-1/1.wav"),
            PhraseSpec("act-2", 0, "a b c", wav_bytes(tone(2.0, freq=180)), "audio/act-2/0.wav"),
        ],
    )
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASR_DATA_ROOT", str(root))
    monkeypatch.setenv("ASR_MODEL_DIR", str(tiny_model_dir))
    monkeypatch.delenv("ASR_ENV", raising=False)
    return root


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, Console(out, err))
    return code, out.getvalue(), err.getvalue()


def test_score_is_a_quiet_real_job_run_ending_in_the_summary(store: Path, tmp_path: Path) -> None:
    code, out, err = _run(["score", DAY])
    assert code == 0, out + err
    for stage in ("activities", "phrase_audio", "transcripts", "letter_scores"):
        assert f"  {stage}" in out
    assert "3/3 phrases" in out  # inference progress (a plain line when not on a terminal)
    assert f"{DAY}: succeeded" in out
    assert f"Partition {DAY}" in out and "share correct" in out  # the summary
    assert '{"' not in out and '{"' not in err  # no JSON unless asked
    assert "Warning" not in err
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (run,) = instance.get_runs()
        assert run.job_name == "score_letters"  # not __ephemeral_asset_job__
        assert run.remote_job_origin is not None
        assert run.remote_job_origin.location_name == LOCATION_NAME
        assert run.tags["dagster/partition"] == DAY
        assert run.tags["asr/env"] == "local"
        assert len(run.tags["asr/model_sha256"]) == 12
    workspace = yaml.safe_load((PROJECT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["python_module"]["location_name"] == LOCATION_NAME


def test_score_loads_the_engine_once_ahead_of_the_run_and_leaves_none_behind(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import asr_assets.resources.inference as inference

    real = inference.open_local_engine
    threads: list[str] = []

    def recording(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(inference, "open_local_engine", recording)
    code, out, err = _run(["score", DAY])
    assert code == 0, out + err
    assert threads == ["engine-prewarm"]  # loaded beside run creation, used by `transcripts`
    assert inference.discard_prewarmed_engines() == 0
    code, out, err = _run(["score", "2026-11-28"])  # no such day: refused before any run
    assert code != 0
    assert inference.discard_prewarmed_engines() == 0  # what it prewarmed went with it


def test_json_logs_only_when_asked(store: Path, tmp_path: Path) -> None:
    log_file = tmp_path / "asr.jsonl"
    code, out, err = _run(["score", DAY, "--log-format", "json", "--log-file", str(log_file)])
    assert code == 0, out + err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {"stage_started", "partition_finished", "inference_progress"} <= {
        r["event"] for r in records
    }
    assert len(log_file.read_text().splitlines()) >= len(records)


def test_failed_score_names_the_step_and_its_cause_without_retrying(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(self: LocalObjectStore, key: str, table: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), key)

    monkeypatch.setattr(LocalObjectStore, "write_table", read_only)
    code, out, err = _run(["score", DAY])
    assert code == 1
    assert f"{DAY}: FAILED" in out
    assert "  failed step  activities" in out
    cause = next(line for line in out.splitlines() if line.startswith("  cause"))
    assert "Read-only file system" in cause
    assert "Traceback" not in out + err
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        (run,) = instance.get_runs()
        retries = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY
        ).records
        assert retries == []
