"""Platform jobs: a workload over a prefix or manifest, run as one Dagster run per job.

The Python API (`submit`, `status`, `cancel`, `results`, `resume`) is what the jobs service and
CLI call; they never read Dagster run records or store keys themselves.
"""

from asr_assets.platform.jobs.api import (
    JobActiveError,
    JobExistsError,
    JobNotFoundError,
    cancel,
    results,
    resume,
    status,
    submit,
)
from asr_assets.platform.jobs.models import (
    DAGSTER_PRIORITY,
    JobProgress,
    JobRequest,
    JobResults,
    JobState,
    JobStatus,
    JobUsage,
    Priority,
)

__all__ = [
    "DAGSTER_PRIORITY",
    "JobActiveError",
    "JobExistsError",
    "JobNotFoundError",
    "JobProgress",
    "JobRequest",
    "JobResults",
    "JobState",
    "JobStatus",
    "JobUsage",
    "Priority",
    "cancel",
    "results",
    "resume",
    "status",
    "submit",
]
