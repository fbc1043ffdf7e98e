"""Partitioning, backfill and step-retry policies every asset shares, and its decorator.

One partition = one UTC day of activities.
"""

import functools
import os
from collections.abc import Mapping
from datetime import date

import dagster as dg

#: The first day this deployment scores, unless ASR_FIRST_DAY says otherwise. Days before it are
#: not partitions at all: the UI shows no "missing" history and a backfill of missing days
#: cannot paint empty days green.
DEFAULT_FIRST_DAY = "2026-11-01"
FIRST_DAY_VARIABLE = "ASR_FIRST_DAY"


class FirstDayConfigError(ValueError):
    """ASR_FIRST_DAY is not an ISO date (YYYY-MM-DD)."""


def first_day(environ: Mapping[str, str] | None = None) -> str:
    """The partitions' start day.

    The one variable read when the module is imported (house rule: nothing else is): a
    partitions definition is part of the asset graph's shape, which Dagster needs before any
    `@dg.definitions` function runs. It is a structural setting, not a secret or an endpoint.
    """
    raw = (os.environ if environ is None else environ).get(FIRST_DAY_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_FIRST_DAY
    try:
        return date.fromisoformat(raw).isoformat()
    except ValueError:
        raise FirstDayConfigError(
            f"{FIRST_DAY_VARIABLE}={raw!r} is not a date (expected YYYY-MM-DD)"
        ) from None


daily_partitions = dg.DailyPartitionsDefinition(
    start_date=first_day(), timezone="UTC", end_offset=1
)

# A backfill groups up to a week of days per run: the model loads once per run instead of once
# per day, and each asset already loops over the run's partition keys.
daily_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)

# Every stage talks to the network in the aws environment (S3 at least; Athena, Triton, AppSync
# for some), so every asset retries a failed step: three more attempts, 1 s doubling, with full
# jitter so runs that failed together do not come back together. This is the layer above the
# per-request retries of `reliability/`: it covers an outage longer than a request's retry
# budget. Failures a retry cannot cure raise `dg.Failure(allow_retries=False)` instead
# (`assets/instrumentation.py`).
network_retry_policy = dg.RetryPolicy(
    max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.FULL
)

#: `@dg.asset` with what every letter-scoring stage shares; each stage adds its deps, kinds and
#: description.
letter_scoring_asset = functools.partial(
    dg.asset,
    partitions_def=daily_partitions,
    backfill_policy=daily_backfill_policy,
    retry_policy=network_retry_policy,
    group_name="letter_scoring",
)
