"""Pure rules of the jobs API: tenant prefixes, callback addresses and signatures, cost, cursors."""

from __future__ import annotations

import time

import pytest

from asr_assets.platform.api.callbacks import CallbackURLError, check_callback_url, sign, verify
from asr_assets.platform.api.service import ApiError, decode_cursor
from asr_assets.platform.jobs.models import JobUsage
from asr_assets.platform.tenancy.auth import LocationError, location_allowed, normalize_location
from asr_assets.platform.tenancy.settings import PlatformSettings, PriceTable, load_settings
from asr_assets.platform.tenancy.usage import estimate_cost

ALLOWED = ["s3://audio/team-a/", "tenants/team-a"]


@pytest.mark.parametrize(
    "location,inside",
    [
        ("s3://audio/team-a/in/", True),
        ("s3://audio/team-a/in/day.jsonl", True),
        ("s3://audio/team-a", True),
        ("tenants/team-a/x.jsonl", True),
        ("s3://audio/team-b/in/", False),
        ("s3://audio/team-ab/in/", False),
        ("s3://other/team-a/in/", False),
        ("tenants/team-b/x", False),
        ("s3://audio/", False),
    ],
)
def test_locations_inside_the_tenants_prefixes(location: str, inside: bool) -> None:
    assert location_allowed(location, ALLOWED) is inside


@pytest.mark.parametrize(
    "location",
    [
        "s3://audio/team-a/../team-b/",
        "s3://audio/team-a/./x",
        "s3://audio/team-a//x",
        "s3://audio/team-a/%2e%2e/x",
        "s3://audio/team-a\\..\\x",
        "/etc/passwd",
        "file:///etc/passwd",
        "https://audio/team-a/",
        "c:/x",
        "s3:///team-a/",
        "",
        "tenants/team-a/\x00",
        "..",
    ],
)
def test_ambiguous_or_escaping_locations_are_refused(location: str) -> None:
    with pytest.raises(LocationError):
        normalize_location(location)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fd00::1]/x",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://localhost/x",
        "gopher://8.8.8.8/x",
        "http:///x",
    ],
)
def test_callback_urls_to_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(CallbackURLError):
        check_callback_url(url)


def test_callback_to_a_public_address_and_to_an_allowed_network() -> None:
    check_callback_url("https://8.8.8.8/hook")
    settings = PlatformSettings(callback_allowed_networks=["127.0.0.1/32"])
    check_callback_url("http://127.0.0.1:9/hook", settings.allowed_networks())
    with pytest.raises(CallbackURLError):
        check_callback_url("http://127.0.0.2:9/hook", settings.allowed_networks())


def test_signatures_verify_only_with_the_right_secret_body_and_time() -> None:
    body = b'{"job_id": "j"}'
    header = sign("s3cret", int(time.time()), body)
    assert verify("s3cret", header, body)
    assert not verify("other", header, body)
    assert not verify("s3cret", header, body + b" ")
    assert not verify("s3cret", sign("s3cret", int(time.time()) - 3600, body), body)
    assert not verify("s3cret", "garbage", body)


def test_cost_from_the_price_table() -> None:
    prices = PriceTable(
        per_audio_hour=1.0,
        per_cpu_hour=0.5,
        per_gpu_hour=2.0,
        per_gb_out=0.1,
        per_gb_in=0.01,
        per_job=0.02,
    )
    usage = JobUsage(
        audio_seconds=1800,
        cpu_seconds=3600,
        gpu_seconds=900,
        bytes_in=2_000_000_000,
        bytes_out=1_000_000_000,
    )
    assert estimate_cost(usage, prices) == pytest.approx(0.02 + 0.5 + 0.5 + 0.5 + 0.02 + 0.1)


def test_settings_from_file_and_environment(tmp_path) -> None:
    path = tmp_path / "platform.yaml"
    path.write_text("prices:\n  currency: EUR\n  per_audio_hour: 0.5\n")
    settings = load_settings({"ASR_PLATFORM_CONFIG": str(path), "ASR_DATA_ROOT": str(tmp_path)})
    assert settings.prices.currency == "EUR" and settings.prices.per_audio_hour == 0.5
    assert settings.database_url == f"sqlite:///{tmp_path / 'platform.db'}"
    url = load_settings({"ASR_PLATFORM_DATABASE_URL": "postgresql+psycopg://db/x"}).database_url
    assert url == "postgresql+psycopg://db/x"
    path.write_text("prices:\n  per_audo_hour: 0.5\n")  # a typo is an error, not a default
    with pytest.raises(ValueError):
        load_settings({"ASR_PLATFORM_CONFIG": str(path)})


@pytest.mark.parametrize("cursor", ["%%%", "bm90aGluZw", "x"])
def test_malformed_cursors_are_400(cursor: str) -> None:
    with pytest.raises(ApiError) as error:
        decode_cursor(cursor)
    assert error.value.status == 400
