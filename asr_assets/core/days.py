"""The first partition day (ASR_FIRST_DAY): pure, so the CLI can check it before any import."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date

#: The first day this deployment scores, unless ASR_FIRST_DAY says otherwise. Days before it are
#: not partitions at all: the UI shows no "missing" history and a backfill of missing days
#: cannot paint empty days green.
DEFAULT_FIRST_DAY = "2026-11-01"
FIRST_DAY_VARIABLE = "ASR_FIRST_DAY"


class FirstDayConfigError(ValueError):
    """ASR_FIRST_DAY is not an ISO date (YYYY-MM-DD)."""


def first_day(environ: Mapping[str, str] | None = None) -> str:
    """The partitions' start day.

    `assets/partitions.py` reads it when imported, the one exception to the house rule that
    nothing reads the environment at import time: a partitions definition is part of the asset
    graph's shape, which Dagster needs before any `@dg.definitions` function runs. It is a
    structural setting, not a secret or an endpoint.
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
