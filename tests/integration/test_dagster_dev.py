"""`dagster dev` on 127.0.0.1 loads the code location, and a run launched through its GraphQL
API (what the UI's Materialize button does) scores a partition."""

import os
import sys
import time
from datetime import date
from pathlib import Path

import httpx
import pytest

from tests.support.data import PhraseSpec, tone, wav_bytes, write_day
from tests.support.processes import free_port, running

pytestmark = pytest.mark.integration

ASSETS_QUERY = "{ assetNodes { assetKey { path } partitionKeysByDimension { name } } }"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def test_dagster_dev_serves_the_graph_and_runs_a_partition(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    store = tmp_path / "store"
    # A clean day: the quality gates run in this job and must pass for published_scores to run.
    write_day(
        store,
        date(2026, 11, 27),
        [
            PhraseSpec("act-1", 0, "b d p", wav_bytes(tone(1.5)), "audio/act-1/0.wav"),
            PhraseSpec("act-1", 1, "m n", wav_bytes(tone(1.0, freq=300)), "audio/act-1/1.wav"),
            PhraseSpec("act-2", 0, "a b c", wav_bytes(tone(2.0, freq=180)), "audio/act-2/0.wav"),
        ],
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASR_DATA_ROOT": str(store),
        "ASR_MODEL_DIR": str(tiny_model_dir),
    }
    dagster = Path(sys.executable).parent / "dagster"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    command = [
        str(dagster),
        "dev",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-m",
        "asr_assets.platform.location",
    ]
    log = tmp_path / "dev.log"
    with (
        running(command, env=env, ready=ready, timeout_s=120, log_path=log),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        nodes = client.post("/graphql", json={"query": ASSETS_QUERY}).json()["data"]["assetNodes"]
        keys = {node["assetKey"]["path"][-1] for node in nodes}
        assert keys >= {
            "activities",
            "phrase_audio",
            "transcripts",
            "alignments",
            "letter_scores",
            "published_scores",
        }
        params = {
            "selector": {
                "repositoryLocationName": "asr_assets.platform.location",
                "repositoryName": "__repository__",
                "jobName": "score_letters",
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "2026-11-27"}]},
            "runConfigData": {},
        }
        launched = client.post(
            "/graphql", json={"query": LAUNCH, "variables": {"params": params}}
        ).json()
        payload = launched["data"]["launchRun"]
        assert payload["__typename"] == "LaunchRunSuccess", payload
        run_id = payload["run"]["runId"]
        status = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            result = client.post(
                "/graphql", json={"query": STATUS, "variables": {"id": run_id}}
            ).json()
            status = result["data"]["runOrError"]["status"]
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(1)
        assert status == "SUCCESS", (tmp_path / "dev.log").read_text()[-3000:]
    assert (store / "results" / "letter_scores" / "activity_date=2026-11-27" / "_SUCCESS").exists()
    published = store / "published" / "activity_results" / "activity_date=2026-11-27.jsonl"
    assert len(published.read_text().splitlines()) == 2
