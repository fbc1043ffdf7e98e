"""SLOs as code: the spec (`asr_assets/slo.yaml`), SLIs per day, error budgets and burn rates.

Every SLO here is an event ratio: good events / valid events over a window (a latency or
freshness objective counts the events under its threshold as good), so one set of functions
computes every SLI, budget and burn rate. Burn rate = observed error ratio / allowed error ratio
(1 - target): 1.0 spends the budget exactly over the SLO window, 14.4 spends 2% of a 30-day
budget in one hour. Alerts follow the multiwindow, multi-burn-rate scheme: a long window says the
burn is significant, a short one that it is still happening.

Pure: events in, numbers out. Where events come from (run history, metrics) is the asset's job.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

SLO_FILE = Path(__file__).resolve().parents[1] / "slo.yaml"
_DURATION = re.compile(r"^(\d+)([mhd])$")


def parse_window(text: str) -> timedelta:
    """`5m`, `6h`, `3d`: the window notation of the spec and of Prometheus."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"window {text!r} is not <n>m, <n>h or <n>d")
    amount, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: amount})


class SliKind(StrEnum):
    PHRASE_SUCCESS = "phrase_success"  # phrases scored / phrases in
    PARTITION_FRESHNESS = "partition_freshness"  # partitions published within threshold_s
    STAGE_LATENCY = "stage_latency"  # stage runs within threshold_s (p-quantile objective)
    QUEUE_AGE = "queue_age"  # runs started within threshold_s of being queued
    TRITON_AVAILABILITY = "triton_availability"  # inferred phrases Triton served
    GPU_UTILIZATION = "gpu_utilization"  # scrape intervals with GPU utilization >= floor


class BurnRateAlert(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: str
    long_window: str
    short_window: str
    burn_rate: float = Field(gt=0)


class CloudWatchSource(BaseModel):
    """EMF metrics the alarm reads: a ratio of two sums, or a latency compared to a threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    good: str | None = None
    total: str | None = None
    bad: str | None = None
    latency: str | None = None
    dimensions: dict[str, str] = Field(default_factory=dict)


class PrometheusSource(BaseModel):
    """PromQL for the error ratio over a window; `{window}` is replaced by the window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    error_ratio: str


class Slo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    sli: SliKind
    target: float = Field(gt=0, lt=1)
    window_days: int = Field(default=28, ge=1, le=90)
    stage: str | None = None
    threshold_s: float | None = Field(default=None, gt=0)
    floor: float | None = Field(default=None, ge=0, le=1)
    runbook: str
    cloudwatch: CloudWatchSource | None = None
    prometheus: PrometheusSource | None = None

    @property
    def error_budget(self) -> float:
        return 1.0 - self.target


class SloSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str
    namespace: str
    burn_rate_alerts: list[BurnRateAlert]
    report_windows: list[str]
    slos: list[Slo]


def load_spec(path: Path = SLO_FILE) -> SloSpec:
    return SloSpec.model_validate(yaml.safe_load(path.read_text()))


@dataclass(frozen=True)
class SliEvent:
    """`good` of `total` events that happened at `at` (a run, a stage, a scrape)."""

    at: datetime
    good: float
    total: float


def ratio(events: Iterable[SliEvent]) -> float | None:
    good = total = 0.0
    for event in events:
        good += event.good
        total += event.total
    return good / total if total else None


def in_window(events: Sequence[SliEvent], now: datetime, window: timedelta) -> list[SliEvent]:
    start = now - window
    return [e for e in events if start < e.at <= now]


def burn_rate(
    slo: Slo, events: Sequence[SliEvent], now: datetime, window: timedelta
) -> float | None:
    """Observed error ratio over the window divided by the budget; None without events."""
    sli = ratio(in_window(events, now, window))
    return None if sli is None else (1.0 - sli) / slo.error_budget


def budget_remaining(slo: Slo, events: Sequence[SliEvent], now: datetime) -> float | None:
    """Share of the SLO window's error budget not yet spent (negative when overspent)."""
    sli = ratio(in_window(events, now, timedelta(days=slo.window_days)))
    return None if sli is None else 1.0 - (1.0 - sli) / slo.error_budget


def daily_sli(events: Iterable[SliEvent]) -> dict[date, float]:
    good: dict[date, float] = defaultdict(float)
    total: dict[date, float] = defaultdict(float)
    for event in events:
        day = event.at.astimezone(UTC).date()
        good[day] += event.good
        total[day] += event.total
    return {day: good[day] / total[day] for day in sorted(total) if total[day]}


def threshold_events(samples: Iterable[tuple[datetime, float]], threshold: float) -> list[SliEvent]:
    """A latency, age or freshness objective as events: good when the value is within it."""
    return [SliEvent(at, 1.0 if value <= threshold else 0.0, 1.0) for at, value in samples]


@dataclass(frozen=True)
class SloStatus:
    slo: Slo
    source: str
    events: int
    sli_window: float | None
    budget_remaining: float | None
    burn_rates: dict[str, float | None]
    daily: dict[date, float]


def evaluate(
    slo: Slo, events: Sequence[SliEvent], now: datetime, windows: Sequence[str], source: str
) -> SloStatus:
    return SloStatus(
        slo=slo,
        source=source,
        events=len(events),
        sli_window=ratio(in_window(events, now, timedelta(days=slo.window_days))),
        budget_remaining=budget_remaining(slo, events, now),
        burn_rates={w: burn_rate(slo, events, now, parse_window(w)) for w in windows},
        daily=daily_sli(in_window(events, now, timedelta(days=slo.window_days))),
    )


def firing(spec: SloSpec, slo: Slo, events: Sequence[SliEvent], now: datetime) -> list[str]:
    """Severities whose long and short windows both burn above the alert's rate."""
    fired = []
    for alert in spec.burn_rate_alerts:
        long = burn_rate(slo, events, now, parse_window(alert.long_window))
        short = burn_rate(slo, events, now, parse_window(alert.short_window))
        if long is not None and short is not None and min(long, short) > alert.burn_rate:
            fired.append(f"{alert.severity}:{alert.long_window}")
    return fired
