"""Data-quality gates: blocking asset checks on the catalog and the result partition, plus drift.

`ALL_CHECKS` is what definitions.py registers. The checks are defined in `checks.py`, the suites
in `suites.py`; `DataQualityResource` in `resources.py` runs them on the native engine
(`native.py`) or on great-expectations itself.
"""

import dagster as dg

from asr_assets.checks.checks import QUALITY_CHECKS

ALL_CHECKS: list[dg.AssetChecksDefinition] = [*QUALITY_CHECKS]
