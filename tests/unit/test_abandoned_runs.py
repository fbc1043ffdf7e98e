"""A killed `asr score` run does not stay STARTED: the next start marks it failed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg

from asr_assets.platform.abandoned_runs import CLI_TAGS, fail_abandoned_runs

SLOW_RUN = textwrap.dedent(
    """
    import time
    import dagster as dg

    @dg.asset
    def slow() -> None:
        time.sleep(120)

    with dg.DagsterInstance.get() as instance:
        dg.materialize([slow], instance=instance, tags={"asr/source": "cli"})
    """
)


def _wait_for_status(home: Path, status: dg.DagsterRunStatus, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs(filters=dg.RunsFilter(statuses=[status], tags=CLI_TAGS))
            if runs:
                return runs[0].run_id
        time.sleep(0.3)
    raise AssertionError(f"no run reached {status}")


def test_a_killed_run_is_marked_failed_on_the_next_start(tmp_path: Path) -> None:
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    # Create the instance's SQLite storage before the run's process does: two processes creating
    # it at once can both stamp its migration table (two alembic heads), a race of the test's
    # own polling, not of the code under test.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-c", SLOW_RUN], env=env, start_new_session=True)
    try:
        run_id = _wait_for_status(home, dg.DagsterRunStatus.STARTED)
        # A live run is left alone.
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert fail_abandoned_runs(instance) == []
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        assert fail_abandoned_runs(instance) == [run_id]
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert fail_abandoned_runs(instance) == []
