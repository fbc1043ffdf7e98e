"""Records the quality gates produce: failed expectations and per-check, per-partition outcomes.

They are plain frozen dataclasses built from great-expectations results, so the Dagster checks,
the quarantine report and the CLI summary all render the same facts, and nothing downstream
depends on GX's own result classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpectationFailure:
    """One expectation that did not hold on one partition.

    Only counts, aggregates (a mean, a number of distinct values, a column list) and a few sample
    rows of allow-listed columns are kept: never the raw unexpected values, which may be audio
    keys or other upstream data a report must not echo.
    """

    check: str
    frame: str
    expectation: str
    columns: tuple[str, ...]
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    bounds: Mapping[str, Any] = field(default_factory=dict)
    sample_rows: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None

    def as_json(self, partition_key: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "check": self.check,
            "table": self.frame,
            "expectation": self.expectation,
            "columns": list(self.columns),
        }
        if partition_key is not None:
            payload = {"partition": partition_key, **payload}
        if self.unexpected_count is not None:
            payload["unexpected_count"] = self.unexpected_count
        if self.unexpected_percent is not None:
            payload["unexpected_percent"] = round(self.unexpected_percent, 3)
        if self.observed_value is not None:
            payload["observed_value"] = self.observed_value
        if self.bounds:
            payload["expected"] = dict(self.bounds)
        if self.error:
            payload["error"] = self.error
        return payload

    def describe(self) -> str:
        """One line a person can read: what was expected, and how far the data was off."""
        target = ", ".join(self.columns) or self.frame
        if self.error:
            return f"{self.expectation}({target}) could not run: {self.error}"
        if self.unexpected_count is not None:
            text = f"{self.expectation}({target}): {self.unexpected_count} rows unexpected"
            if self.unexpected_percent is not None:
                text += f" ({self.unexpected_percent:.1f}%"
                mostly = self.bounds.get("mostly")
                text += f", at most {(1 - mostly) * 100:.1f}% allowed)" if mostly else ")"
            return text
        return f"{self.expectation}({target}): observed {self.observed_value}, expected " + (
            ", ".join(f"{k}={v}" for k, v in self.bounds.items()) or "otherwise"
        )


@dataclass(frozen=True)
class CheckOutcome:
    """The result of one named check (a group of expectations) on one partition."""

    check: str
    partition_key: str
    evaluated: int
    rows_checked: int
    failures: tuple[ExpectationFailure, ...] = ()
    observations: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def unexpected_count(self) -> int:
        return sum(f.unexpected_count or 0 for f in self.failures)
