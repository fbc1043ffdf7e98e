"""One partition = one UTC day of activities."""

import dagster as dg

daily_partitions = dg.DailyPartitionsDefinition(
    start_date="2024-01-01", timezone="UTC", end_offset=1
)
