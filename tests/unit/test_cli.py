"""`asr`: user mistakes are one `asr: error:` line with a hint and exit code 2, never a traceback."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from asr_assets.platform.cli import Console, build_parser, main
from asr_assets.resources.preflight import is_permission_error, writable_root_problems
from tests.support.data import PhraseSpec, tone, wav_bytes, write_day

PROJECT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, Console(out, err))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ASR_DATA_ROOT", str(tmp_path / "store"))
    monkeypatch.delenv("ASR_ENV", raising=False)
    return tmp_path


def _assert_usage_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("asr: error: "), err
    assert "hint:" in err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_mistyped_date_is_a_usage_error(env: Path) -> None:
    code, _, err = _run(["score", "2026/11/27"])
    _assert_usage_error(code, err, "'2026/11/27' is not a date", "YYYY-MM-DD")


def test_day_before_the_first_partition_is_a_usage_error(env: Path) -> None:
    code, _, err = _run(["score", "2020-01-01"])
    _assert_usage_error(code, err, "outside the partitions", "ASR_FIRST_DAY")


def test_unknown_environment_is_a_usage_error(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASR_ENV", "foo")
    code, _, err = _run(["score", "2026-11-27"])
    _assert_usage_error(code, err, "ASR_ENV='foo'")


def test_empty_or_mistyped_data_root_is_a_usage_error_naming_the_path(env: Path) -> None:
    missing = env / "no-such-store"
    code, _, err = _run(["--data-root", str(missing), "score", "2026-11-27"])
    _assert_usage_error(code, err, f"data root {missing} does not exist")
    (env / "empty").mkdir()
    code, _, err = _run(["score", "2026-11-27", "--data-root", str(env / "empty")])
    _assert_usage_error(
        code, err, str(env / "empty" / "catalog" / "activities" / "activity_date=2026-11-27")
    )


def test_tampered_model_is_caught_before_the_run(env: Path, tiny_model_dir: Path) -> None:
    store = env / "store"
    write_day(
        store,
        date(2026, 11, 27),
        [PhraseSpec("act-1", 0, "b d", wav_bytes(tone(1.0)), "audio/act-1/0.wav")],
    )
    tampered = env / "model"
    tampered.mkdir()
    for path in tiny_model_dir.iterdir():
        (tampered / path.name).write_bytes(path.read_bytes())
    (tampered / "config.json").write_text("{}")
    code, _, err = _run(["--model-dir", str(tampered), "score", "2026-11-27"])
    _assert_usage_error(code, err, "checksum mismatch for config.json", "ASR_MODEL_DIR")
    assert not (env / "home").exists()  # nothing was launched


def test_read_only_data_root_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.NamedTemporaryFile", read_only)
    (problem,) = writable_root_problems(str(tmp_path))
    assert problem.check == "data_root"
    assert "not writable (Read-only file system)" in problem.message
    assert is_permission_error(OSError(errno.EROFS, "ro"))
    assert is_permission_error(PermissionError(errno.EACCES, "denied"))
    assert not is_permission_error(OSError(errno.ENOSPC, "full"))


def test_bad_first_day_is_a_usage_error_not_an_import_traceback(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ASR_FIRST_DAY": "someday",
        "DAGSTER_HOME": str(tmp_path),
        "PYTHONPATH": str(PROJECT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "asr_assets.platform.cli", "score", "2026-11-27"],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    _assert_usage_error(done.returncode, done.stderr, "ASR_FIRST_DAY='someday'")


def test_help_documents_flags_examples_and_variables() -> None:
    text = build_parser().format_help()
    for needle in (
        "--data-root",
        "--model-dir",
        "--verbose",
        "--log-format",
        "examples:",
        "asr score 2026-11-26 2026-11-27",
        "ASR_DATA_ROOT",
        "ASR_MODEL_DIR",
        "ASR_ENV",
        "ASR_FIRST_DAY",
        "ASR_EXECUTOR",
        "DAGSTER_HOME",
    ):
        assert needle in text, needle


def test_loading_the_definitions_prints_no_dagster_notices(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "default",
            "-c",
            "import asr_assets.definitions as d; d.defs()",
        ],
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_console_entry_exits_promptly_with_the_code_and_flushed_output(tmp_path: Path) -> None:
    """`asr` ends with os._exit after main: the exit code, every line written and the exit
    handlers must survive that shortcut."""
    import subprocess
    import sys

    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('exit handler ran\\n'))\n"
        "from asr_assets.platform.cli import entry\n"
        "sys.argv = ['asr', 'score', 'not-a-day']\n"
        "entry()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "ASR_DATA_ROOT": str(tmp_path)},
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "not-a-day" in out.stderr
    assert out.stderr.rstrip().endswith("exit handler ran")
