"""A run `asr score` recorded is re-executable from the UI (`make dev`), in one process like the CLI's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import httpx
import pytest

from tests.support.data import PhraseSpec, tone, wav_bytes, write_day
from tests.support.processes import free_port, running

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[2]
DAY = "2026-11-27"
REEXECUTE = """
mutation Reexecute($parent: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parent, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def test_cli_run_is_re_executed_from_the_ui(tmp_path: Path, tiny_model_dir: Path) -> None:
    store = tmp_path / "store"
    write_day(
        store,
        date.fromisoformat(DAY),
        [
            PhraseSpec("act-1", 0, "b d p", wav_bytes(tone(1.5)), "audio/act-1/0.wav"),
            PhraseSpec("act-2", 0, "a b c", wav_bytes(tone(2.0, freq=180)), "audio/act-2/0.wav"),
        ],
    )
    home = tmp_path / "home"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASR_DATA_ROOT": str(store),
        "ASR_MODEL_DIR": str(tiny_model_dir),
        "PYTHONPATH": str(PROJECT),
    }
    env.pop("ASR_ENV", None)
    cli = subprocess.run(
        [sys.executable, "-m", "asr_assets.platform.cli", "score", DAY],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (parent,) = instance.get_runs()

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    log = tmp_path / "dev.log"
    # As `make dev` starts it: without the advice to use a `dg` CLI this project does not ship.
    makefile = (PROJECT / "Makefile").read_text()
    env["PYTHONWARNINGS"] = re.search(r"PYTHONWARNINGS='([^']+)'", makefile).group(1)  # type: ignore[union-attr]
    with (
        running(command, env=env, cwd=PROJECT, ready=ready, timeout_s=180, log_path=log),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        payload = client.post(
            "/graphql", json={"query": REEXECUTE, "variables": {"parent": parent.run_id}}
        ).json()["data"]["launchRunReexecution"]
        assert payload["__typename"] == "LaunchRunSuccess", payload
        child_id = payload["run"]["runId"]
        status = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            result = client.post(
                "/graphql", json={"query": STATUS, "variables": {"id": child_id}}
            ).json()
            status = result["data"]["runOrError"]["status"]
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(1)
        assert status == "SUCCESS", log.read_text()[-3000:]
    assert "dg dev" not in log.read_text()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        child = instance.get_run_by_id(child_id)
        assert child is not None
        assert child.parent_run_id == parent.run_id
        assert child.job_name == "score_letters"
        assert child.tags["dagster/partition"] == DAY
        engine = [
            record.event_log_entry.message
            for record in instance.get_records_for_run(
                child_id, of_type=dg.DagsterEventType.ENGINE_EVENT
            ).records
        ]
        # The in-process executor: one process, the stack imported and the model loaded once.
        assert any("in process" in (message or "") for message in engine), engine
