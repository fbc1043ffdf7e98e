"""Data-quality gates: blocking asset checks on the result partition (and the catalog)."""

import dagster as dg

ALL_CHECKS: list[dg.AssetChecksDefinition] = []
