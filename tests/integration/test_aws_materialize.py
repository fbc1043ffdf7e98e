"""The whole graph with ASR_ENV=aws: audio and results in moto S3, the catalog in moto Athena.

The day is the e2e test's generated day (tests/support/data.py): its audio is uploaded to S3 and
its catalog rows become Athena's canned result, so the outcome must match the local run's.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from asr_assets.core.storage import SUCCESS_FILE, result_prefix
from asr_assets.definitions import ALL_ASSETS, EnvironmentConfigError, build_definitions
from asr_assets.resources.athena import AthenaActivityCatalog
from asr_assets.resources.publisher import AppSyncPublisher
from asr_assets.resources.s3 import S3ObjectStore
from tests.support.data import STANDARD_DAY_ERRORS, standard_day
from tests.support.graphql_server import running_appsync
from tests.support.moto_server import (  # noqa: F401
    REGION,
    MotoServer,
    athena_result,
    aws_test_environment,
    moto,
    s3_client,
    upload_tree,
)

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DAY = "2026-11-27"
STORE_BUCKET = "asr-store"
RESULTS_BUCKET = "athena-results"


API_KEY = "test-api-key"


def aws_environ(
    endpoint: str, tmp: Path, model_dir: Path, appsync_url: str = "http://127.0.0.1:9/graphql"
) -> dict[str, str]:
    return {
        "ASR_ENV": "aws",
        "ASR_S3_BUCKET": STORE_BUCKET,
        "ASR_S3_PREFIX": "asr",
        "ASR_S3_ENDPOINT_URL": endpoint,
        "ASR_S3_CACHE_DIR": str(tmp / "s3-cache"),
        "ASR_S3_CACHE_MIN_FREE_MB": "1",
        "ASR_AWS_REGION": REGION,
        "ASR_ATHENA_DATABASE": "asr",
        "ASR_ATHENA_TABLE": "activities",
        "ASR_ATHENA_OUTPUT_LOCATION": f"s3://{RESULTS_BUCKET}/queries/",
        "ASR_ATHENA_ENDPOINT_URL": endpoint,
        "ASR_ATHENA_POLL_INTERVAL_S": "0.01",
        "ASR_MODEL_DIR": str(model_dir),
        "ASR_INFERENCE": "local",  # Triton is covered by tests/integration/test_triton_*.py
        "ASR_APPSYNC_URL": appsync_url,
        "ASR_APPSYNC_AUTH_MODE": "api_key",
    }


@pytest.fixture(scope="module")
def aws_run(
    moto: MotoServer,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
):
    tmp = tmp_path_factory.mktemp("aws")
    with (
        pytest.MonkeyPatch.context() as mp,
        aws_test_environment(mp, moto.endpoint),
        running_appsync(api_key=API_KEY) as (appsync_url, appsync),
    ):
        mp.setenv("ASR_APPSYNC_API_KEY", API_KEY)
        moto.reset()
        generated = tmp / "generated"
        phrases = standard_day(generated, date.fromisoformat(DAY))
        client = s3_client(moto.endpoint)
        client.create_bucket(Bucket=STORE_BUCKET)
        client.create_bucket(Bucket=RESULTS_BUCKET)
        upload_tree(client, STORE_BUCKET, generated / "audio", prefix="asr/audio/")
        catalog_rows = pq.read_table(
            generated / "catalog" / "activities" / f"activity_date={DAY}" / "part-0.parquet"
        )
        # One canned result per query: the first run and the rerun below.
        moto.queue_athena_results([athena_result(catalog_rows), athena_result(catalog_rows)])
        definitions = build_definitions(
            aws_environ(moto.endpoint, tmp, tiny_model_dir, appsync_url)
        )
        with dg.instance_for_test() as instance:
            result = dg.materialize(
                ALL_ASSETS, partition_key=DAY, resources=definitions.resources, instance=instance
            )
            assert result.success
            yield tmp, phrases, result, definitions, instance, appsync


def _metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, object]]:
    return {
        event.materialization.asset_key.path[-1]: {
            k: v.value for k, v in event.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }


def test_the_aws_environment_wires_s3_and_athena(aws_run) -> None:
    _, _, _, definitions, _, _ = aws_run
    resources = definitions.resources
    assert isinstance(resources["store"], S3ObjectStore)
    assert isinstance(resources["catalog"], AthenaActivityCatalog)
    assert resources["store"].bucket == STORE_BUCKET and resources["store"].prefix == "asr"
    dumped = json.dumps({k: v.model_dump() for k, v in resources.items()}, default=str)
    assert "testing" not in dumped  # the dummy credentials never enter resource config


def test_counts_reconcile_at_every_stage(aws_run) -> None:
    _, phrases, result, _, _, _ = aws_run
    metadata = _metadata(result)
    assert set(metadata) == {a.key.path[-1] for a in ALL_ASSETS}
    for stage, values in metadata.items():
        assert values["phrases_in"] == len(phrases), stage
        assert values["reconciled"] is True, stage
    assert metadata["letter_scores"]["phrases_errored"] == len(STANDARD_DAY_ERRORS)
    assert str(metadata["letter_scores"]["result_path"]).startswith(
        f"s3://{STORE_BUCKET}/asr/results/letter_scores/activity_date={DAY}"
    )


def test_the_result_partition_is_committed_on_s3(aws_run) -> None:
    _, phrases, result, definitions, _, _ = aws_run
    store: S3ObjectStore = definitions.resources["store"]
    prefix = result_prefix("letter_scores", DAY)
    manifest = store.read_committed(prefix)
    assert manifest is not None and manifest["run_id"] == result.run_id
    assert manifest["phrases_in"] == len(phrases)
    assert sorted(o.key for o in store.iter_objects(f"{prefix}/")) == [
        f"{prefix}/{SUCCESS_FILE}",
        f"{prefix}/part-{result.run_id}.parquet",
    ]
    errors = store.read_table(manifest["files"]["errors"]).to_pylist()  # type: ignore[index]
    assert {(e["activity_id"], e["phrase_index"]): e["reason_code"] for e in errors} == (
        STANDARD_DAY_ERRORS
    )
    phrase_rows = store.read_table(manifest["files"]["phrase_results"]).to_pylist()  # type: ignore[index]
    durations = {(r["activity_id"], r["phrase_index"]): r["duration_s"] for r in phrase_rows}
    assert durations[("act-2", 0)] == pytest.approx(1.2, abs=0.01)  # cut from one recording
    assert store.list_page("results/_staging/").objects == []
    assert store.list_page("cache/audio/").objects  # clips cached in the bucket, by content


def test_published_one_record_per_activity(aws_run) -> None:
    _, _, result, definitions, _, appsync = aws_run
    assert isinstance(definitions.resources["publisher"], AppSyncPublisher)
    records = {activity: record for activity, record in appsync.records.items()}
    assert sorted(records) == ["act-1", "act-2", "act-3"]
    assert {record["run_id"] for record in records.values()} == {result.run_id}
    assert all(call.headers.get("x-api-key") == API_KEY for call in appsync.calls)
    assert "student-secret" not in json.dumps(records, default=str)


def test_rerun_reuses_the_s3_caches_and_replaces_the_partition(aws_run) -> None:
    tmp, _, _, definitions, instance, _ = aws_run
    store: S3ObjectStore = definitions.resources["store"]
    second = dg.materialize(
        ALL_ASSETS, partition_key=DAY, resources=definitions.resources, instance=instance
    )
    assert second.success
    metadata = _metadata(second)
    assert metadata["phrase_audio"]["clips_cached"] == 5
    assert metadata["transcripts"]["phrases_by_engine"] == {"cache": 5}
    manifest = store.read_committed(result_prefix("letter_scores", DAY))
    assert manifest is not None and manifest["run_id"] == second.run_id
    # Recordings, clips and emissions now come from the local cache (answered by 304s): the
    # store reports its figures into the run's event log when the run ends.
    (figures,) = [
        str(record.user_message)
        for record in instance.all_logs(second.run_id)
        if "cache hits" in str(record.user_message)
    ]
    hits = int(figures.split(" cache hits")[0].rsplit(" ", 1)[-1])
    misses = int(figures.split(" cache misses")[0].rsplit(" ", 1)[-1])
    assert hits >= 15 and misses == 0, figures
    assert any((tmp / "s3-cache" / "objects").rglob("*"))


def test_student_ids_never_reach_logs(aws_run) -> None:
    _, _, result, _, instance, _ = aws_run
    text = "\n".join(str(record.user_message) for record in instance.all_logs(result.run_id))
    assert "student-secret" not in text


def test_missing_aws_variables_are_named() -> None:
    with pytest.raises(EnvironmentConfigError, match="ASR_S3_BUCKET, ASR_ATHENA_DATABASE"):
        build_definitions({"ASR_ENV": "aws"})
    with pytest.raises(EnvironmentConfigError, match="ASR_ATHENA_OUTPUT_LOCATION"):
        build_definitions({"ASR_ENV": "aws", "ASR_S3_BUCKET": "b", "ASR_ATHENA_DATABASE": "d"})


def test_loading_the_aws_definitions_touches_no_network(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens; loading must not notice.
    environ = aws_environ("http://127.0.0.1:9", tmp_path, tmp_path / "model")
    definitions = build_definitions(environ)
    assert definitions.resolve_sensor_def("new_audio").job_name == "score_letters"
    with pytest.raises(ValueError, match="endpoint override"):
        build_definitions({**environ, "ASR_ATHENA_RESULT_FORMAT": "arrow"})
    with pytest.raises(EnvironmentConfigError, match="ASR_ATHENA_RESULT_FORMAT"):
        build_definitions({**environ, "ASR_ATHENA_RESULT_FORMAT": "csv"})
