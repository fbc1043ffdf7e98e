"""The expectation suites evaluated with vectorized pandas/numpy: GX's semantics, without GX.

Why a second engine. Importing great-expectations costs ~4-6 s and building its ephemeral
context, registries and validators another ~1-2 s per gate, on every run: for a small day that
was most of the wall time of `asr score` (a 1-phrase day spent 6.5 of its 15 run seconds in the
two gates). The suites use eleven stock expectations whose semantics are simple column
arithmetic, so this module evaluates exactly those, the way GX 1.x's pandas engine does:

- column map expectations ignore nulls (`None`, NaN, NaT) and succeed when
  ``(non-null - unexpected) / non-null >= mostly``; `unexpected_percent` is over non-null values;
- `ExpectColumnValuesToBeNull` / `...ToNotBeNull` count over every row;
- column-pair expectations drop rows by ``ignore_row_if`` (default: both values missing), and
  multicolumn ones by ``ignore_row_if`` (default: all values missing) before counting;
- an expectation that cannot be evaluated (a missing column, values of the wrong type) fails
  with the error message, as GX's ``raised_exception`` does.

GX stays the reference: ``DataQualityResource(engine="great_expectations")`` runs the same
specs through GX, and the conformance tests run every suite through both engines and require
the same verdicts, counts and sampled rows. An expectation kind this module does not know is
an error at suite-build time in tests, never a silent pass.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from asr_assets.checks.suites import Expect, FrameSuite


@dataclass(frozen=True)
class NativeResult:
    """One expectation's outcome, with the fields GX's SUMMARY result format reports."""

    expect: Expect
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    unexpected_index_list: tuple[int, ...] = ()
    error: str | None = None
    kind: str = field(default="")

    @property
    def expectation_type(self) -> str:
        """GX's snake_case type name (``ExpectColumnValuesToNotBeNull`` ->
        ``expect_column_values_to_not_be_null``), as reports have always named it."""
        return snake_case(self.expect.kind)


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class ExpectationError(Exception):
    """The expectation could not be evaluated on this frame (reported, never a pass)."""


def _series(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame.columns:
        raise ExpectationError(f'The column "{name}" in BatchData does not exist.')
    return frame[name]


def _map_result(
    expect: Expect,
    unexpected: pd.Series,
    considered: int,
    total: int,
    partial: int,
) -> NativeResult:
    """A map expectation's verdict from the boolean `unexpected` mask over the considered rows."""
    count = int(unexpected.sum())
    mostly = float(expect.kwargs.get("mostly", 1.0))
    success = True if total == 0 or considered == 0 else (considered - count) / considered >= mostly
    percent = count / considered * 100 if considered else None
    indices = tuple(int(i) for i in unexpected.index[unexpected.to_numpy(dtype=bool)][:partial])
    return NativeResult(expect, success, count, percent, None, indices)


def _column_map(
    check: Callable[[pd.Series, Mapping[str, Any]], pd.Series],
) -> Callable[[pd.DataFrame, Expect, int], NativeResult]:
    """Null-ignoring single-column map expectation: `check` answers "expected?" per value."""

    def run(frame: pd.DataFrame, expect: Expect, partial: int) -> NativeResult:
        column = _series(frame, expect.kwargs["column"])
        present = column[column.notna()]
        ok = check(present, expect.kwargs) if len(present) else pd.Series([], dtype=bool)
        unexpected = ~ok.astype(bool)
        return _map_result(expect, unexpected, len(present), len(column), partial)

    return run


def _null_map(want_null: bool) -> Callable[[pd.DataFrame, Expect, int], NativeResult]:
    def run(frame: pd.DataFrame, expect: Expect, partial: int) -> NativeResult:
        column = _series(frame, expect.kwargs["column"])
        unexpected = column.notna() if want_null else column.isna()
        count = int(unexpected.sum())
        total = len(column)
        mostly = float(expect.kwargs.get("mostly", 1.0))
        success = True if total == 0 else (total - count) / total >= mostly
        percent = count / total * 100 if total else None
        indices = tuple(int(i) for i in unexpected.index[unexpected.to_numpy(dtype=bool)][:partial])
        return NativeResult(expect, success, count, percent, None, indices)

    return run


def _between(values: pd.Series, kwargs: Mapping[str, Any]) -> pd.Series:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is None and high is None:
        raise ExpectationError("min_value and max_value cannot both be None")
    if low is not None and high is not None and low > high:
        raise ExpectationError("min_value cannot be greater than max_value")
    if not pd.api.types.is_numeric_dtype(values) or isinstance(low, str) or isinstance(high, str):
        text_bounds = isinstance(low, str) or isinstance(high, str)
        for value in values:
            comparable = isinstance(value, str) if text_bounds else _is_number(value)
            if not comparable:
                raise ExpectationError(
                    "Column values, min_value, and max_value must either be None or of the "
                    "same type."
                )
    ok = pd.Series(True, index=values.index)
    if low is not None:
        ok &= values > low if kwargs.get("strict_min") else values >= low
    if high is not None:
        ok &= values < high if kwargs.get("strict_max") else values <= high
    return ok


def _is_number(value: object) -> bool:
    return isinstance(value, int | float | np.number | np.bool_)


def _in_set(values: pd.Series, kwargs: Mapping[str, Any]) -> pd.Series:
    return values.isin(list(kwargs["value_set"]))


def _not_in_set(values: pd.Series, kwargs: Mapping[str, Any]) -> pd.Series:
    return ~values.isin(list(kwargs["value_set"]))


def _regex(values: pd.Series, kwargs: Mapping[str, Any]) -> pd.Series:
    with warnings.catch_warnings():
        # pandas warns when the pattern has groups (they are irrelevant to a match test).
        warnings.simplefilter("ignore", UserWarning)
        return values.astype(str).str.contains(kwargs["regex"], regex=True)


def _pair(
    compare: Callable[[pd.Series, pd.Series, Mapping[str, Any]], pd.Series],
) -> Callable[[pd.DataFrame, Expect, int], NativeResult]:
    def run(frame: pd.DataFrame, expect: Expect, partial: int) -> NativeResult:
        a = _series(frame, expect.kwargs["column_A"])
        b = _series(frame, expect.kwargs["column_B"])
        rule = expect.kwargs.get("ignore_row_if", "both_values_are_missing")
        if rule == "both_values_are_missing":
            keep = ~(a.isna() & b.isna())
        elif rule == "either_value_is_missing":
            keep = ~(a.isna() | b.isna())
        elif rule == "neither":
            keep = pd.Series(True, index=a.index)
        else:
            raise ExpectationError(f"unknown ignore_row_if {rule!r}")
        a, b = a[keep], b[keep]
        try:
            ok = compare(a, b, expect.kwargs) if len(a) else pd.Series([], dtype=bool)
        except TypeError as exc:
            raise ExpectationError(str(exc)) from exc
        return _map_result(expect, ~ok.astype(bool), len(a), len(frame), partial)

    return run


def _greater(a: pd.Series, b: pd.Series, kwargs: Mapping[str, Any]) -> pd.Series:
    return a >= b if kwargs.get("or_equal") else a > b


def _equal(a: pd.Series, b: pd.Series, kwargs: Mapping[str, Any]) -> pd.Series:
    return a == b


def _compound_unique(frame: pd.DataFrame, expect: Expect, partial: int) -> NativeResult:
    names = list(expect.kwargs["column_list"])
    columns = frame[[_series(frame, n).name for n in names]]
    rule = expect.kwargs.get("ignore_row_if", "all_values_are_missing")
    missing = columns.isna()
    if rule == "all_values_are_missing":
        keep = ~missing.all(axis=1)
    elif rule == "any_value_is_missing":
        keep = ~missing.any(axis=1)
    elif rule == "never":
        keep = pd.Series(True, index=frame.index)
    else:
        raise ExpectationError(f"unknown ignore_row_if {rule!r}")
    kept = columns[keep]
    unexpected = kept.duplicated(keep=False)
    return _map_result(expect, unexpected, len(kept), len(frame), partial)


def _unique_value_count(frame: pd.DataFrame, expect: Expect, partial: int) -> NativeResult:
    observed = int(_series(frame, expect.kwargs["column"]).nunique(dropna=True))
    low, high = expect.kwargs.get("min_value"), expect.kwargs.get("max_value")
    ok = (low is None or observed >= low) and (high is None or observed <= high)
    return NativeResult(expect, bool(ok), observed_value=observed)


def _row_count(frame: pd.DataFrame, expect: Expect, partial: int) -> NativeResult:
    observed = len(frame)
    return NativeResult(expect, observed == int(expect.kwargs["value"]), observed_value=observed)


EVALUATORS: dict[str, Callable[[pd.DataFrame, Expect, int], NativeResult]] = {
    "ExpectColumnValuesToNotBeNull": _null_map(want_null=False),
    "ExpectColumnValuesToBeNull": _null_map(want_null=True),
    "ExpectColumnValuesToBeBetween": _column_map(_between),
    "ExpectColumnValuesToBeInSet": _column_map(_in_set),
    "ExpectColumnValuesToNotBeInSet": _column_map(_not_in_set),
    "ExpectColumnValuesToMatchRegex": _column_map(_regex),
    "ExpectColumnPairValuesAToBeGreaterThanB": _pair(_greater),
    "ExpectColumnPairValuesToBeEqual": _pair(_equal),
    "ExpectCompoundColumnsToBeUnique": _compound_unique,
    "ExpectColumnUniqueValueCountToBeBetween": _unique_value_count,
    "ExpectTableRowCountToEqual": _row_count,
}


def evaluate(suite: FrameSuite, partial: int) -> list[NativeResult]:
    """Every expectation of `suite`, in order; `partial` caps the unexpected indices kept."""
    results = []
    for expect in suite.expectations:
        evaluator = EVALUATORS.get(expect.kind)
        if evaluator is None:
            results.append(
                NativeResult(expect, False, error=f"unsupported expectation {expect.kind}")
            )
            continue
        try:
            results.append(evaluator(suite.frame, expect, partial))
        except (ExpectationError, KeyError, ValueError, TypeError) as exc:
            results.append(NativeResult(expect, False, error=str(exc)))
    return results
