"""`asr-platform` client settings and error lines (the HTTP paths run in the server tests)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from asr_assets.platform.platform_cli import Api, _detail, main


def test_url_and_key_come_from_flags_then_environment_then_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('url = "http://file:1"\napi_key = "from-file"\n')
    monkeypatch.setenv("ASR_PLATFORM_CLIENT_CONFIG", str(config))
    monkeypatch.delenv("ASR_PLATFORM_URL", raising=False)
    monkeypatch.delenv("ASR_PLATFORM_KEY", raising=False)
    assert (Api(None, None).url, Api(None, None).key) == ("http://file:1", "from-file")
    monkeypatch.setenv("ASR_PLATFORM_URL", "http://env:2")
    monkeypatch.setenv("ASR_PLATFORM_KEY", "from-env")
    assert (Api(None, None).url, Api(None, None).key) == ("http://env:2", "from-env")
    assert (Api("http://flag:3", "k").url, Api("http://flag:3", "k").key) == ("http://flag:3", "k")


def test_error_lines_are_short_and_specific() -> None:
    validation = httpx.Response(
        422, json={"detail": [{"loc": ["body", "workload"], "msg": "String should match"}]}
    )
    assert _detail(validation) == "workload: String should match"
    quota = httpx.Response(
        429, json={"detail": "quota exceeded: 3 active jobs"}, headers={"Retry-After": "30"}
    )
    assert _detail(quota) == "quota exceeded: 3 active jobs (retry after 30 s)"
    assert _detail(httpx.Response(502, text="<html>bad gateway</html>")) == (
        "<html>bad gateway</html>"
    )


def test_missing_key_and_bad_flags_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASR_PLATFORM_CLIENT_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("ASR_PLATFORM_KEY", raising=False)
    result = CliRunner().invoke(main, ["status", "job-1"])
    assert result.exit_code == 1 and "no API key" in result.output
    result = CliRunner().invoke(
        main, ["--key", "k", "submit", "--workload", "w:1", "--output", "o/"]
    )
    assert result.exit_code == 2 and "exactly one of --input or --manifest" in result.output
