"""The fault suite's report: per fault kind, phrases in / scored / errored / lost.

Fault-suite tests record one `FaultRow` each through the `fault_report` fixture; at the end of the
session the rows are written as JSON under pytest's temporary directory and printed as a table in
the terminal summary, so `make test` shows the figures, not just a pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

REPORT_KEY = pytest.StashKey[list["FaultRow"]]()
REPORT_PATH_KEY = pytest.StashKey[Path]()


@dataclass
class FaultRow:
    fault: str
    rate: float
    phrases_in: int
    scored: int
    errored: int
    lost: int
    faults_injected: int
    requests: int
    retries: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    succeeded: bool = True
    step_retries: int = 0  # Dagster step retries the run needed (the client retries missed)


@pytest.fixture(scope="session")
def fault_report(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[FaultRow]]:
    rows: list[FaultRow] = []
    request.config.stash[REPORT_KEY] = rows
    yield rows
    path = tmp_path_factory.getbasetemp() / "fault-suite.json"
    path.write_text(json.dumps([asdict(row) for row in rows], indent=2, sort_keys=True))
    request.config.stash[REPORT_PATH_KEY] = path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(REPORT_KEY, None)
    if not rows:
        return
    terminalreporter.write_sep("=", "fault suite: every phrase accounted for")
    header = (
        f"{'fault':<18}{'rate':>6}{'phrases in':>12}{'scored':>8}{'errored':>9}{'lost':>6}"
        f"{'faults':>8}{'requests':>10}{'retries':>9}{'step retries':>13}{'seconds':>9}  ok"
    )
    terminalreporter.write_line(header)
    for row in rows:
        terminalreporter.write_line(
            f"{row.fault:<18}{row.rate:>6.0%}{row.phrases_in:>12}{row.scored:>8}"
            f"{row.errored:>9}{row.lost:>6}{row.faults_injected:>8}{row.requests:>10}"
            f"{sum(row.retries.values()):>9}{row.step_retries:>13}{row.seconds:>9.1f}"
            f"  {'yes' if row.succeeded else 'NO'}"
        )
    path = terminalreporter.config.stash.get(REPORT_PATH_KEY, None)
    if path is not None:
        terminalreporter.write_line(f"report: {path}")
