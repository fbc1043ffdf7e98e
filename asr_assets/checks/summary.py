"""The check outcomes of a run, for the command line's summary (`make demo`)."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from asr_assets.assets.letter_scores import quarantine_key, read_quarantine
from asr_assets.resources.object_store import ObjectStore


@dataclass(frozen=True)
class CheckSummary:
    asset: str
    check: str
    passed: bool
    severity: str
    description: str | None


def check_outcomes(result: dg.ExecuteInProcessResult) -> list[CheckSummary]:
    """Every asset-check evaluation of an in-process run, in check order."""
    summaries = [
        CheckSummary(
            asset=evaluation.asset_key.to_user_string(),
            check=evaluation.check_name,
            passed=evaluation.passed,
            severity=evaluation.severity.value,
            description=evaluation.description,
        )
        for evaluation in result.get_asset_check_evaluations()
    ]
    return sorted(summaries, key=lambda s: (s.asset, s.check))


def format_check_outcomes(outcomes: list[CheckSummary]) -> list[str]:
    """Lines such as `  checks           10 passed, 0 failed, 1 warning(s)`, then each one.

    A WARN check (drift) that did not pass is a warning, not a failure: it never stops a run.
    """
    failed = [o for o in outcomes if not o.passed]
    warnings = sum(o.severity == "WARN" for o in failed)
    counts = f"{len(outcomes) - len(failed)} passed, {len(failed) - warnings} failed"
    lines = [f"  checks           {counts}" + (f", {warnings} warning(s)" if warnings else "")]
    for outcome in failed:
        word = "WARN" if outcome.severity == "WARN" else "FAILED"
        detail = outcome.description or ""
        lines.append(f"{'':19}{word} {outcome.asset}.{outcome.check}: {detail}")
    return lines


def quarantine_status(store: ObjectStore, partition_key: str) -> str:
    """`  quality          ...` for `asr summary`: whether the partition may be published."""
    report = read_quarantine(store, partition_key)
    if report is None:
        return "  quality          not quarantined"
    gates = ", ".join(sorted(report.gates))
    return f"  quality          QUARANTINED by {gates}: {store.uri(quarantine_key(partition_key))}"
