"""`DataQualityResource`: the gates' thresholds, and the engine that evaluates the suites.

The suites (`suites.py`) are written in great-expectations' vocabulary. Two engines run them:

- ``native`` (the default): `native.py` evaluates the eleven stock expectations the suites use
  with vectorized pandas, with GX 1.x's semantics. It costs milliseconds; GX's import and
  context cost ~6 s per run, most of a small day's wall time.
- ``great_expectations``: GX 1.x itself (dagster-ge supports only GX 0.x), in an in-memory
  (`mode="ephemeral"`) context built once per process, one suite per frame, `batch.validate`.
  Nothing is written to disk, nothing is sent anywhere (analytics off). It is the reference the
  native engine is tested against, and the engine to use where GX's own Data Docs or custom
  expectations are wanted.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from asr_assets.checks.models import CheckOutcome, ExpectationFailure
from asr_assets.checks.suites import (
    ACTIVITIES_CHECKS,
    ACTIVITIES_REJECTED_SHARE_CHECK,
    ACTIVITIES_SCHEMA_CHECK,
    ERROR_FRAME_COLUMNS,
    EXPECTED_SAMPLE_COLUMNS,
    LETTER_SAMPLE_COLUMNS,
    LETTER_SCORES_CHECKS,
    LETTER_SCORES_ERROR_SHARE_CHECK,
    LETTER_SCORES_SCHEMA_CHECK,
    LETTER_SCORES_UNALIGNED_SHARE_CHECK,
    OUTCOME_SAMPLE_COLUMNS,
    PHRASE_FRAME_COLUMNS,
    PHRASE_SAMPLE_COLUMNS,
    Expect,
    FrameSuite,
    PhraseLetterCounts,
    Thresholds,
    activities_suites,
    letter_frames,
    letter_scores_expectations,
    letter_scores_suites,
    phrase_frames,
    phrase_info_frame,
    result_phrase_frames,
    result_preflight,
    sample_rows,
)
from asr_assets.core.models import PartitionManifest
from asr_assets.core.tables import value_counts
from asr_assets.observability.logging import get_logger
from asr_assets.resources.object_store import StoredTable

if TYPE_CHECKING:
    from asr_assets.checks.native import NativeResult

log = get_logger(__name__)

# GX builds metric registries and validators on shared module state; the in-process executor runs
# one step at a time, but a multiprocess/threaded caller must not interleave two validations.
_GX_LOCK = threading.Lock()


class DataQualityResource(dg.ConfigurableResource):
    """Thresholds of the blocking gates and the drift report, with their documented defaults."""

    max_error_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Most of a partition's phrases that may leave as error rows (missing, "
        "silent, undecodable audio...) before the partition is quarantined. Error rows are "
        "per-phrase outcomes consumers already see with a reason code; this bound catches an "
        "outage (audio store, catalog, engine), not a noisy classroom.",
    )
    max_unaligned_share: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Most of a partition's scored phrases that may hold `unaligned` letters (no "
        "timing); weighted by phrases so one long phrase cannot tip the day.",
    )
    max_rejected_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Most of the day's catalog rows the activities stage may reject "
        "(malformed, invalid expected_text, unsafe audio key, duplicate).",
    )
    time_tolerance_s: float = Field(
        default=0.02,
        ge=0.0,
        description="Slack allowed for a letter's end_s beyond its phrase's duration_s "
        "(one 20 ms CTC frame).",
    )
    sample_rows: int = Field(
        default=5, ge=0, le=50, description="Offending rows shown per failed expectation."
    )
    letter_chunk_rows: int = Field(
        default=16_384,
        ge=1,
        description="Letter rows the native engine converts and judges at a time; the gate's "
        "memory stays flat as the day grows, and the verdicts do not depend on it.",
    )
    drift_trailing_partitions: int = Field(
        default=7, ge=1, description="Committed partitions the drift report compares against."
    )
    drift_lookback_days: int = Field(
        default=31, ge=1, description="How far back to look for those trailing partitions."
    )
    drift_max_ks: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="Two-sample Kolmogorov-Smirnov statistic above which a distribution "
        "(phrase accuracy or letter confidence) counts as shifted.",
    )
    drift_max_mean_shift: float = Field(
        default=0.1,
        gt=0.0,
        description="Absolute change of the mean accuracy or confidence that counts as shifted.",
    )
    drift_min_samples: int = Field(
        default=20, ge=1, description="Fewer values than this on either side: no verdict."
    )
    histogram_bins: int = Field(default=10, ge=2, le=50, description="Bins of the score plot.")
    engine: Literal["native", "great_expectations"] = Field(
        default="native",
        description="What evaluates the expectation suites: `native` (vectorized pandas with "
        "GX's semantics, milliseconds) or `great_expectations` (GX 1.x itself, ~6 s of import "
        "and set-up per process; the reference the native engine is tested against).",
    )

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            max_error_share=self.max_error_share,
            max_unaligned_share=self.max_unaligned_share,
            max_rejected_share=self.max_rejected_share,
            time_tolerance_s=self.time_tolerance_s,
        )

    def validate_activities(self, partition_key: str, table: pa.Table) -> list[CheckOutcome]:
        """One outcome per activities check for one partition's stage table."""
        suites, preflight = activities_suites(table, partition_key, self.thresholds)
        rejected = (
            table.num_rows - table.column("error_reason").null_count
            if ("error_reason" in table.column_names)
            else 0
        )
        observations = {
            ACTIVITIES_REJECTED_SHARE_CHECK: {
                "rejected_share": round(rejected / table.num_rows, 4) if table.num_rows else 0.0,
                "max_rejected_share": self.max_rejected_share,
            }
        }
        return self._outcomes(
            ACTIVITIES_CHECKS,
            partition_key,
            self._run(suites),
            (ACTIVITIES_SCHEMA_CHECK, 1, preflight),
            observations,
        )

    def validate_letter_scores(
        self,
        partition_key: str,
        manifest: PartitionManifest,
        tables: Mapping[str, pa.Table | StoredTable],
    ) -> list[CheckOutcome]:
        """One outcome per letter_scores check for one committed result partition.

        `tables["letter_scores"]` may be a `StoredTable`: the native engine then reads it in
        chunks of `letter_chunk_rows` and never holds the day's letter rows as one frame.
        """
        letters = tables["letter_scores"]
        preflight = result_preflight({name: _schema_of(table) for name, table in tables.items()})
        # The phrase suites read a few columns of these; nothing else is decoded.
        phrase_tables = {
            "phrase_results": _columns_of(tables["phrase_results"], PHRASE_FRAME_COLUMNS),
            "errors": _columns_of(tables["errors"], ERROR_FRAME_COLUMNS),
        }
        letter_schema = _schema_of(letters)
        scored = phrase_tables["phrase_results"].num_rows
        errored = phrase_tables["errors"].num_rows
        has_status = "status" in letter_schema.names
        statuses = value_counts(_column_of(letters, "status")) if has_status else Counter()
        # A row without a status still counts as an expected letter, as it always has.
        expected = letters.num_rows - statuses["inserted"] if has_status else 0
        observations = {
            LETTER_SCORES_ERROR_SHARE_CHECK: {
                "error_share": round(errored / (scored + errored), 4) if scored + errored else 0.0,
                "max_error_share": self.max_error_share,
            },
            LETTER_SCORES_UNALIGNED_SHARE_CHECK: {
                "unaligned_share": round(statuses["unaligned"] / expected, 4) if expected else 0.0,
                "max_unaligned_share": self.max_unaligned_share,
            },
        }
        letters_conform = not any(f.frame == "letter_scores" for f in preflight)
        if self.engine == "native" and letters_conform:
            reports = self._stream_letter_scores(manifest, letters, phrase_tables)
        else:
            # A letter table off its contract is judged whole: chunks of a mistyped column could
            # convert to different pandas dtypes, and the verdict must not depend on chunking.
            whole = letters if isinstance(letters, pa.Table) else letters.read()
            suites, _ = letter_scores_suites(
                manifest, {**phrase_tables, "letter_scores": whole}, self.thresholds
            )
            reports = self._run(suites)
        return self._outcomes(
            LETTER_SCORES_CHECKS,
            partition_key,
            reports,
            (LETTER_SCORES_SCHEMA_CHECK, len(tables), preflight),
            observations,
        )

    def _stream_letter_scores(
        self,
        manifest: PartitionManifest,
        letters: pa.Table | StoredTable,
        phrase_tables: Mapping[str, pa.Table],
    ) -> list[SuiteReport]:
        """The native engine over the letter rows chunk by chunk (the same verdicts as whole)."""
        from asr_assets.checks.native import StreamedSuite, evaluate_streamed

        thresholds = self.thresholds
        expect = letter_scores_expectations(manifest, thresholds)
        phrases, errors = result_phrase_frames(phrase_tables)
        phrase_info = phrase_info_frame(phrases)
        partial = max(self.sample_rows, 1)
        letter_suite = StreamedSuite(
            "letter_scores",
            expect.letters,
            functools.partial(_sample, columns=LETTER_SAMPLE_COLUMNS),
            partial,
        )
        expected_suite = StreamedSuite(
            "letter_scores_expected",
            expect.expected_letters,
            functools.partial(_sample, columns=EXPECTED_SAMPLE_COLUMNS),
            partial,
        )
        counts = PhraseLetterCounts()
        counting = True

        def chunks() -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
            nonlocal counting
            batches = (
                letters.to_batches(max_chunksize=self.letter_chunk_rows)
                if isinstance(letters, pa.Table)
                else letters.batches(self.letter_chunk_rows)
            )
            for batch in batches:
                frames = letter_frames(batch, phrase_info, thresholds)
                if counting:
                    counts.add(frames[1])
                yield frames
            counting = False

        evaluate_streamed([letter_suite, expected_suite], chunks)
        phrases, outcomes = phrase_frames(phrases, errors, counts)
        reports = [
            SuiteReport(
                suite.name,
                suite.expectations,
                suite.rows,
                self._native_result_failures(suite.name, suite.results(), None),
            )
            for suite in (letter_suite, expected_suite)
        ]
        return reports + self._run(
            [
                FrameSuite("phrase_results", phrases, expect.phrases, PHRASE_SAMPLE_COLUMNS),
                FrameSuite("phrase_outcomes", outcomes, expect.outcomes, OUTCOME_SAMPLE_COLUMNS),
            ]
        )

    # -- GX ----------------------------------------------------------------------------------

    def _outcomes(
        self,
        checks: Sequence[str],
        partition_key: str,
        reports: Sequence[SuiteReport],
        schema: tuple[str, int, Sequence[ExpectationFailure]],
        observations: Mapping[str, Mapping[str, Any]],
    ) -> list[CheckOutcome]:
        """Group every suite's results under the check its expectation belongs to.

        `schema` is (schema check name, tables compared, failures of the Arrow comparison).
        """
        failures: dict[str, list[ExpectationFailure]] = defaultdict(list)
        evaluated: dict[str, int] = defaultdict(int)
        rows: dict[str, int] = defaultdict(int)
        schema_check, compared, preflight = schema
        evaluated[schema_check] += compared
        for failure in preflight:
            failures[failure.check].append(failure)
        for report in reports:
            for expect in report.expectations:
                evaluated[expect.check] += 1
                rows[expect.check] = max(rows[expect.check], report.rows)
            for failure in report.failures:
                failures[failure.check].append(failure)
        outcomes = [
            CheckOutcome(
                check=check,
                partition_key=partition_key,
                evaluated=evaluated[check],
                rows_checked=rows[check],
                failures=tuple(failures[check]),
                observations=observations.get(check, {}),
            )
            for check in checks
        ]
        for outcome in outcomes:
            log.info(
                "quality_check_evaluated",
                check=outcome.check,
                partition=partition_key,
                passed=outcome.passed,
                expectations=outcome.evaluated,
                failed_expectations=len(outcome.failures),
                unexpected_count=outcome.unexpected_count,
            )
        return outcomes

    def _run(self, suites: Sequence[FrameSuite]) -> list[SuiteReport]:
        if self.engine == "native":
            from asr_assets.checks.native import evaluate

            partial = max(self.sample_rows, 1)
            return [
                SuiteReport(
                    suite.name,
                    suite.expectations,
                    len(suite.frame),
                    self._native_result_failures(suite.name, evaluate(suite, partial), suite),
                )
                for suite in suites
            ]
        return self._run_gx(suites)

    def _native_result_failures(
        self, name: str, results: Sequence[NativeResult], suite: FrameSuite | None
    ) -> list[ExpectationFailure]:
        """Failures of native results; rows come from `suite`, or were sampled while streaming."""
        return [
            ExpectationFailure(
                check=result.expect.check,
                frame=name,
                expectation=result.expectation_type,
                columns=result.expect.columns,
                unexpected_count=result.unexpected_count,
                unexpected_percent=result.unexpected_percent,
                observed_value=_observed(result.observed_value),
                bounds=result.expect.bounds,
                sample_rows=(
                    suite.sample(list(result.unexpected_index_list), self.sample_rows)
                    if suite is not None
                    else tuple(result.sample_rows or ())[: self.sample_rows]
                ),
                error=result.error[:300] if result.error else None,
            )
            for result in results
            if not result.success
        ]

    def _run_gx(self, suites: Sequence[FrameSuite]) -> list[SuiteReport]:
        import great_expectations as gx
        import great_expectations.expectations as gxe

        results: list[SuiteReport] = []
        with _GX_LOCK:
            context = _gx_context()
            for suite in suites:
                if not suite.expectations:
                    results.append(SuiteReport(suite.name, (), len(suite.frame), []))
                    continue
                # Names are unique per validation so the per-process context can be reused.
                name = f"{suite.name}-{next(_GX_NAMES)}"
                batch_definition = (
                    context.data_sources.get("asr_quality")
                    .add_dataframe_asset(name)
                    .add_batch_definition_whole_dataframe("partition")
                )
                gx_suite = context.suites.add(
                    gx.ExpectationSuite(
                        name=name,
                        expectations=[
                            getattr(gxe, spec.kind)(**spec.kwargs, meta={"spec": position})
                            for position, spec in enumerate(suite.expectations)
                        ],
                    )
                )
                batch = batch_definition.get_batch(batch_parameters={"dataframe": suite.frame})
                validation = batch.validate(
                    gx_suite,
                    result_format={
                        "result_format": "SUMMARY",
                        "partial_unexpected_count": max(self.sample_rows, 1),
                    },
                )
                results.append(
                    SuiteReport(
                        suite.name,
                        suite.expectations,
                        len(suite.frame),
                        self._failures(suite, validation.results),
                    )
                )
                context.suites.delete(name)
                context.data_sources.get("asr_quality").delete_asset(name)
        return results

    def _failures(self, suite: FrameSuite, results: Sequence[Any]) -> list[ExpectationFailure]:
        failures = []
        for result in results:
            if result.success:
                continue
            spec = suite.expectations[int(result.expectation_config.meta["spec"])]
            info = result.exception_info or {}
            error = info.get("exception_message") if info.get("raised_exception") else None
            detail = result.result or {}
            indices = detail.get("partial_unexpected_index_list") or []
            failures.append(
                ExpectationFailure(
                    check=spec.check,
                    frame=suite.name,
                    expectation=result.expectation_config.type,
                    columns=spec.columns,
                    unexpected_count=detail.get("unexpected_count"),
                    unexpected_percent=detail.get("unexpected_percent"),
                    observed_value=_observed(detail.get("observed_value")),
                    bounds=spec.bounds,
                    sample_rows=suite.sample(
                        [int(i) for i in indices if isinstance(i, int)], self.sample_rows
                    ),
                    error=str(error)[:300] if error else None,
                )
            )
        return failures


_GX_NAMES = itertools.count()


@functools.cache
def _gx_context() -> Any:
    """One ephemeral GX context per process: building it costs ~1 s, importing GX ~4-6 s."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    context.data_sources.add_pandas("asr_quality")
    return context


def _observed(value: Any) -> Any:
    """Aggregates only (a mean, a count, a column list); anything else is summarised."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)[:50]
    return str(type(value).__name__)


@dataclass(frozen=True)
class SuiteReport:
    """What one suite's evaluation contributes to the outcomes: its specs, rows and failures."""

    name: str
    expectations: tuple[Expect, ...]
    rows: int
    failures: list[ExpectationFailure]


def _sample(
    frame: pd.DataFrame, indices: Sequence[int], limit: int, *, columns: Sequence[str]
) -> tuple[dict[str, Any], ...]:
    return sample_rows(frame, columns, indices, limit)


def _schema_of(table: pa.Table | StoredTable) -> pa.Schema:
    return table.schema if isinstance(table, pa.Table) else table.file_schema


def _columns_of(table: pa.Table | StoredTable, names: Sequence[str]) -> pa.Table:
    """The named columns the table has (a missing one is the schema check's to report)."""
    present = [name for name in names if name in _schema_of(table).names]
    return table.select(present) if isinstance(table, pa.Table) else table.read(present)


def _column_of(table: pa.Table | StoredTable, name: str) -> pa.ChunkedArray:
    return _columns_of(table, [name]).column(name)
