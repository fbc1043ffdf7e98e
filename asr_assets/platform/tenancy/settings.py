"""Platform configuration: database, price table, default quotas, callback policy.

Read once when the service or CLI starts (never at import time) from the YAML file named by
`ASR_PLATFORM_CONFIG`, with `ASR_PLATFORM_DATABASE_URL` overriding the database.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class Quotas(BaseModel):
    """Limits checked at submission; a breach is a 429 with `Retry-After`."""

    model_config = ConfigDict(extra="forbid")

    max_active_jobs: int = Field(default=10, ge=1)
    max_files_per_job: int = Field(default=100_000, ge=1)
    audio_hours_per_day: float = Field(default=100.0, gt=0)


class PriceTable(BaseModel):
    """Unit prices that turn measured usage into an estimated cost (not a bill)."""

    model_config = ConfigDict(extra="forbid")

    currency: str = "USD"
    per_audio_hour: float = 0.30
    per_cpu_hour: float = 0.05
    per_gpu_hour: float = 1.50
    per_gb_in: float = 0.0
    per_gb_out: float = 0.09
    per_job: float = 0.0


class PlatformSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str = "sqlite:///.asr-data/platform.db"
    prices: PriceTable = Field(default_factory=PriceTable)
    default_quotas: Quotas = Field(default_factory=Quotas)
    # Callbacks go only to public addresses unless a network is listed here (tests list loopback).
    callback_allowed_networks: list[str] = Field(default_factory=list)
    callback_max_attempts: int = Field(default=5, ge=1, le=20)
    callback_backoff_s: float = Field(default=2.0, gt=0)
    callback_timeout_s: float = Field(default=5.0, gt=0)
    # How often the service refreshes unfinished jobs (usage, callbacks) in the background.
    watch_interval_s: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # Base URL of the Dagster UI, for the run links in job responses; none when not served.
    dagster_ui_url: str | None = None

    @field_validator("callback_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)
        return value

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.callback_allowed_networks]


def default_database_url(environ: Mapping[str, str]) -> str:
    root = Path(environ.get("ASR_DATA_ROOT", ".asr-data")).resolve()
    return f"sqlite:///{root / 'platform.db'}"


def load_settings(environ: Mapping[str, str] | None = None) -> PlatformSettings:
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    path = environ.get("ASR_PLATFORM_CONFIG")
    if path:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: the platform configuration must be a mapping")
        raw.update(loaded)
    raw.setdefault("database_url", default_database_url(environ))
    if environ.get("ASR_PLATFORM_DATABASE_URL"):
        raw["database_url"] = environ["ASR_PLATFORM_DATABASE_URL"]
    return PlatformSettings.model_validate(raw)
