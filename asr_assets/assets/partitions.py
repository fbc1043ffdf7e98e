"""One partition = one UTC day of activities."""

import dagster as dg

daily_partitions = dg.DailyPartitionsDefinition(
    start_date="2024-01-01", timezone="UTC", end_offset=1
)

# A backfill groups up to a week of days per run: the model loads once per run instead of once
# per day, and each asset already loops over the run's partition keys.
daily_backfill_policy = dg.BackfillPolicy.multi_run(max_partitions_per_run=7)
