"""The code location Dagster loads: the daily graph's definitions plus the platform's jobs.

It sits at the top of the house (platform), so `asr_assets.definitions` stays below the
platform and never imports it (DESIGN.md: imports flow one way). `workspace.yaml`, the
`[tool.dagster]` table, the image's code server and the runs the CLI and the jobs API create all
name this module.
"""

from __future__ import annotations

import os

import dagster as dg

from asr_assets.definitions import build_definitions


@dg.definitions
def defs() -> dg.Definitions:
    # Platform jobs (docs/platform.md): their assets, job and resources; the store is shared.
    from asr_assets.platform.jobs.assets import job_definitions

    return dg.Definitions.merge(build_definitions(os.environ), job_definitions(os.environ))
