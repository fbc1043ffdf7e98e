"""Partitioning, backfill and step-retry policies every asset shares, and its decorator.

One partition = one UTC day of activities.
"""

import functools

import dagster as dg

from asr_assets.core.days import DEFAULT_FIRST_DAY, FirstDayConfigError, first_day

__all__ = ["DEFAULT_FIRST_DAY", "FirstDayConfigError", "daily_partitions", "first_day"]

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
