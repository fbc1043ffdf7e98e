"""The quickstart in docs/platform.md runs as written, against a temporary instance and store."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.jobs import REPO, SAMPLE_STORE, write_instance_yaml

pytestmark = pytest.mark.e2e


def test_quickstart_runs_both_jobs(tmp_path: Path) -> None:
    text = (REPO / "docs" / "platform.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1]
    code = re.search(r"```python\n(.*?)```", quickstart, re.S).group(1)
    home, store = tmp_path / ".dagster-home", tmp_path / ".asr-data"
    write_instance_yaml(home)
    shutil.copytree(SAMPLE_STORE / "audio", store / "audio")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "ASR_DATA_ROOT": str(store),
        "ASR_TORCH_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("COMPLETED ") for line in lines) == 2, done.stdout
    assert "1 files scored" in lines
    assert list((store / "jobs" / "first-transcription" / "shards").glob("*/_SUCCESS"))
