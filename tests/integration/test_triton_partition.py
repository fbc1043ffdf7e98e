"""The whole graph on Triton, with Triton killed in the middle of the partition.

The python-backend model SIGKILLs its own server process group when asked to serve its third
batch, so the crash lands at the same point of the run every time. The breaker must open, the
local engine must finish the partition, the metadata must count phrases per engine, and no
phrase may be lost. Then, with fallback switched off, the same dead server fails the run with a
clear error.
"""

import json
import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.definitions import ALL_ASSETS, build_definitions
from asr_assets.reliability.breaker import reset_shared_breakers
from asr_assets.resources.inference import TritonInferenceResource
from tests.support.data import STANDARD_DAY_ERRORS, standard_day
from tests.support.triton_server import exported_repository, running_server

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAY = "2026-11-27"
MODEL = "tiny-random"
TRITON_BATCHES_BEFORE_CRASH = 2


@pytest.fixture(autouse=True)
def fresh_breakers() -> Iterator[None]:
    reset_shared_breakers()
    yield
    reset_shared_breakers()


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        event.materialization.asset_key.path[-1]: {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def _triton(url: str, model_dir: Path, **overrides) -> TritonInferenceResource:
    values = {
        "url": url,
        "model_name": MODEL,
        "model_dir": str(model_dir),
        # One phrase per batch, so the crash falls between phrases of the partition.
        "max_batch_size": 1,
        "request_batch_size": 1,
        "failure_threshold": 2,
        "cool_down_s": 600.0,
        "request_timeout_s": 20.0,
        "probe_timeout_s": 2.0,
    }
    return TritonInferenceResource(**{**values, **overrides})


def test_triton_dies_mid_partition_and_the_fallback_finishes(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    repository = exported_repository(
        tiny_model_dir, tmp_path_factory.getbasetemp() / "triton-production-repo", MODEL
    )
    root = tmp_path_factory.mktemp("store")
    phrases = standard_day(root, date(2026, 11, 27))
    good = len(phrases) - len(STANDARD_DAY_ERRORS)
    base = build_definitions({"ASR_DATA_ROOT": str(root), "ASR_MODEL_DIR": str(tiny_model_dir)})
    workdir = tmp_path_factory.mktemp("triton-crash")
    with running_server(repository, MODEL, workdir) as (server, control):
        control.set(kill_server_after_batches=TRITON_BATCHES_BEFORE_CRASH)
        resources = {**base.resources, "inference": _triton(server.grpc_url, tiny_model_dir)}
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                ALL_ASSETS, partition_key=DAY, resources=resources, instance=instance
            )
        assert result.success
        assert not server.alive(), "the server was supposed to die mid-partition"

        metadata = _metadata(result)
        transcripts = metadata["transcripts"]
        assert transcripts["phrases_by_engine"] == {
            "triton": TRITON_BATCHES_BEFORE_CRASH,
            "local-torch": good - TRITON_BATCHES_BEFORE_CRASH,
        }
        fallback = transcripts["inference_fallback"]
        assert fallback["fell_back"] is True and fallback["breaker_state"] == "open"
        assert "UNAVAILABLE" in fallback["last_fallback_reason"]
        for stage, values in metadata.items():
            assert values["phrases_in"] == len(phrases), stage
            assert values["reconciled"] is True, stage

        manifest = json.loads(
            (root / "results" / "letter_scores" / f"activity_date={DAY}" / "_SUCCESS").read_text()
        )
        phrase_rows = pq.read_table(root / manifest["files"]["phrase_results"]).to_pylist()
        errors = pq.read_table(root / manifest["files"]["errors"]).to_pylist()
        assert len(phrase_rows) == good and len(errors) == len(STANDARD_DAY_ERRORS)
        engines = sorted(row["engine"] for row in phrase_rows)
        assert engines.count("triton") == TRITON_BATCHES_BEFORE_CRASH
        assert engines.count("local-torch") == good - TRITON_BATCHES_BEFORE_CRASH
        assert {row["model_sha256"] for row in phrase_rows} == {manifest["model"]["sha256"]}

        warnings = [
            json.loads(r.getMessage())
            for r in caplog.records
            if r.levelno == logging.WARNING and "inference_fallback" in r.getMessage()
        ]
        assert warnings and warnings[-1]["reason"]

        # Fallback off: the dead server fails the stage with the reason, not phrase by phrase.
        reset_shared_breakers()
        strict = {
            **base.resources,
            "inference": _triton(server.grpc_url, tiny_model_dir, fallback_enabled=False),
        }
        with dg.instance_for_test() as instance:
            failed = dg.materialize(
                ALL_ASSETS,
                partition_key=DAY,
                resources=strict,
                instance=instance,
                raise_on_error=False,
                run_config={"ops": {"transcripts": {"config": {"reuse_emissions": False}}}},
            )
        assert not failed.success
        failure = next(
            event
            for event in failed.all_events
            if event.event_type_value == "STEP_FAILURE" and event.step_key == "transcripts"
        )
        message = failure.step_failure_data.error.to_string()
        assert "InferenceUnavailableError" in message
        assert "fallback is switched off" in message and "UNAVAILABLE" in message
        assert strict["inference"].unavailable_reason() is not None
