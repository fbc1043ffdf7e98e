"""A `score_letters` run launched from the UI vs the same day scored by `asr score`.

Each measurement starts from a fresh copy of the shipped sample day (no cached emissions) and a
fresh DAGSTER_HOME. The UI path is what the Materialize button does: `dagster dev` on
workspace.yaml, a GraphQL `launchRun`, the default run launcher starting a run process. It is
measured with the in-process executor (ASR_EXECUTOR=in_process, the default) and with Dagster's
multiprocess executor (the default before it: a process per step). Times are wall clock from
launch to the run's end; the run's own duration (the instance's run stats) is printed beside.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import httpx

from asr_assets.platform.cli import SAMPLE_DAY, prepare_sample
from tests.support.processes import free_port, running

PROJECT = Path(__file__).resolve().parents[1]
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def _environment(root: Path, executor: str) -> dict[str, str]:
    data, home = root / "data", root / "home"
    prepare_sample(data)
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROJECT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASR_DATA_ROOT": str(data),
        "ASR_EXECUTOR": executor,
        "PYTHONPATH": str(PROJECT),
    }
    env.pop("ASR_ENV", None)
    return env


def _run_seconds(home: str, run_id: str) -> float:
    with dg.DagsterInstance.from_config(home) as instance:
        stats = instance.get_run_stats(run_id)
        return float((stats.end_time or 0.0) - (stats.start_time or 0.0))


def cli_run(root: Path) -> tuple[float, float]:
    env = _environment(root, "in_process")
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "asr_assets.platform.cli", "score", SAMPLE_DAY],
        env=env,
        cwd=root,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - started
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        (run,) = instance.get_runs()
    return wall, _run_seconds(env["DAGSTER_HOME"], run.run_id)


def ui_run(root: Path, executor: str) -> tuple[float, float]:
    env = _environment(root, executor)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    dagster = Path(sys.executable).parent / "dagster"
    command = [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    params = {
        "selector": {
            "repositoryLocationName": "asr_assets",
            "repositoryName": "__repository__",
            "jobName": "score_letters",
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": SAMPLE_DAY}]},
        "runConfigData": {},
    }
    with (
        running(command, env=env, cwd=PROJECT, ready=ready, timeout_s=240),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        started = time.perf_counter()
        payload = client.post(
            "/graphql", json={"query": LAUNCH, "variables": {"params": params}}
        ).json()["data"]["launchRun"]
        if payload["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(str(payload))
        run_id = payload["run"]["runId"]
        while True:
            status = client.post(
                "/graphql", json={"query": STATUS, "variables": {"id": run_id}}
            ).json()["data"]["runOrError"]["status"]
            if status in {"SUCCESS", "FAILURE", "CANCELED"}:
                break
            time.sleep(0.5)
        wall = time.perf_counter() - started
    if status != "SUCCESS":
        raise RuntimeError(f"UI run {run_id} ended {status}")
    return wall, _run_seconds(env["DAGSTER_HOME"], run_id)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ui-cli-") as tmp:
        base = Path(tmp)
        cli_wall, cli_run_s = cli_run(base / "cli")
        print(f"asr score (CLI process)        wall {cli_wall:6.1f} s   run {cli_run_s:6.1f} s")
        rows = {}
        for executor in ("in_process", "multiprocess"):
            wall, run_s = ui_run(base / executor, executor)
            rows[executor] = wall
            print(
                f"UI launchRun, {executor:<13}   wall {wall:6.1f} s   run {run_s:6.1f} s"
                f"   ({wall / cli_wall:.2f}x the CLI's wall time)"
            )
        print(
            f"in_process vs multiprocess UI run: {rows['multiprocess'] / rows['in_process']:.2f}x"
            " faster"
        )


if __name__ == "__main__":
    main()
