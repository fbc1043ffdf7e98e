"""The README's `asr-platform` walk-through, for real: the shipped instance config (queued run
coordinator) worked by the Dagster daemon, the jobs API under uvicorn on SQLite (its default),
and the CLI's five commands, each in its own process as a user would run them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, running

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _setup_block() -> str:
    """The README's preparation block (audio and a manifest under the tenant's prefix)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Jobs API and the `asr-platform` CLI", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_walkthrough_finishes_a_job(tmp_path: Path) -> None:
    home, data = tmp_path / ".dagster-home", tmp_path / ".asr-data"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")  # as `make dev` does
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ASR_TORCH_THREADS": "1",
        "ASR_PLATFORM_URL": f"http://127.0.0.1:{port}",
    }
    for name in ("ASR_PLATFORM_CONFIG", "ASR_PLATFORM_DATABASE_URL", "ASR_PLATFORM_KEY"):
        env.pop(name, None)
    # The preparation block runs from the repository root with $PWD pointing there; here the
    # instance and the store live under tmp_path instead.
    setup = _setup_block().replace("$PWD/.dagster-home", str(home))
    setup = setup.replace("$PWD/.asr-data", str(data)).replace("python ", f"{sys.executable} ")
    subprocess.run(["bash", "-euc", setup], cwd=ROOT, env=env, check=True, timeout=60)
    env |= {"DAGSTER_HOME": str(home), "ASR_DATA_ROOT": str(data)}

    def cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = {"ASR_PLATFORM_KEY": key} if key else {}
        return subprocess.run(
            [sys.executable, "-m", "asr_assets.platform.platform_cli", *args],
            cwd=ROOT,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    daemon = [str(VENV_BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")]
    serve = [sys.executable, "-m", "asr_assets.platform.platform_cli", "serve"]
    with (
        running(daemon, env=env, cwd=ROOT, ready=lambda: True, log_path=tmp_path / "daemon.log"),
        running(
            [*serve, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            ready=up,
            log_path=tmp_path / "serve.log",
        ),
    ):
        created = cli("--json", "tenants", "create", "team-a", "--prefix", "tenants/team-a/")
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)["api_key"]
        submitted = cli(
            "--json",
            "submit",
            "--workload",
            "letter-scoring:1",
            "--manifest",
            "tenants/team-a/day.jsonl",
            "--output",
            "tenants/team-a/results/",
            "--priority",
            "high",
            "--wait",
            "--poll",
            "0.5",
            key=key,
        )
        log = (tmp_path / "daemon.log").read_text(errors="replace")[-2000:]
        assert submitted.returncode == 0, (submitted.stdout, submitted.stderr, log)
        job = json.loads(submitted.stdout)
        assert job["state"] == "COMPLETED" and job["progress"]["done"] == 5, job
        usage = cli("--json", "usage", "--group-by", "workload", key=key)
        assert usage.returncode == 0, usage.stderr
        [row] = json.loads(usage.stdout)["rows"]
        assert (row["group"], row["jobs"], row["files"]) == ("letter-scoring:1", 1, 5)
        table = cli("workloads", key=key)
        assert "letter-scoring:1.1.0" in table.stdout and "reading-assessment" in table.stdout
        unknown = cli(
            "submit",
            "--workload",
            "nope:1",
            "--input",
            "tenants/team-a/audio/",
            "--output",
            "tenants/team-a/r2/",
            key=key,
        )
        assert unknown.returncode == 1 and "422" in unknown.stderr
        assert "Traceback" not in unknown.stderr
    rows = (data / "tenants" / "team-a" / "results" / "shards").glob("*/part-0.parquet")
    assert list(rows)
