"""Score drift: how far a partition's accuracy and confidence distributions moved lately.

Pure numpy: the two-sample Kolmogorov-Smirnov statistic (largest gap between the empirical CDFs,
0 = same distribution, 1 = disjoint) and the shift of the mean, plus the plot of both
distributions rendered as SVG (kept in the store) and as a Markdown histogram (readable in the
Dagster UI, which does not render images embedded in Markdown). No plotting library is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np


@dataclass(frozen=True)
class DriftSettings:
    max_ks: float
    max_mean_shift: float
    min_samples: int
    bins: int


@dataclass(frozen=True)
class DriftMetric:
    """One distribution (phrase accuracy or letter confidence) compared with its baseline."""

    name: str
    n_current: int
    n_baseline: int
    mean_current: float | None
    mean_baseline: float | None
    ks_statistic: float | None
    current_histogram: tuple[float, ...]
    baseline_histogram: tuple[float, ...]
    verdict: str  # "stable" | "shifted" | "insufficient_data"

    @property
    def mean_shift(self) -> float | None:
        if self.mean_current is None or self.mean_baseline is None:
            return None
        return self.mean_current - self.mean_baseline

    def as_json(self) -> dict[str, object]:
        shift = self.mean_shift
        return {
            "metric": self.name,
            "verdict": self.verdict,
            "ks_statistic": None if self.ks_statistic is None else round(self.ks_statistic, 4),
            "mean_current": _round(self.mean_current),
            "mean_baseline": _round(self.mean_baseline),
            "mean_shift": _round(shift),
            "n_current": self.n_current,
            "n_baseline": self.n_baseline,
        }


@dataclass(frozen=True)
class DriftReport:
    partition_key: str
    baseline_partitions: tuple[str, ...]
    metrics: tuple[DriftMetric, ...] = field(default_factory=tuple)

    @property
    def shifted(self) -> bool:
        return any(metric.verdict == "shifted" for metric in self.metrics)


def insufficient_data(report: DriftReport, required_baseline: int) -> str | None:
    """Why the report cannot judge the partition, or None when it can.

    A drift check with no history must not read as "passed": it has compared nothing.
    """
    found = len(report.baseline_partitions)
    if found < required_baseline:
        return f"insufficient data ({found} of {required_baseline} baseline days)"
    thin = [m.name for m in report.metrics if m.verdict == "insufficient_data"]
    if thin:
        return f"insufficient data (too few values: {', '.join(thin)})"
    return None


def numeric_metadata(report: DriftReport) -> dict[str, float | int]:
    """Flat numbers per metric, so the UI plots them across partitions (the asset's Plots tab)."""
    values: dict[str, float | int] = {"drift_baseline_days": len(report.baseline_partitions)}
    for metric in report.metrics:
        for label, value in (
            ("ks", metric.ks_statistic),
            ("mean", metric.mean_current),
            ("baseline_mean", metric.mean_baseline),
            ("mean_shift", metric.mean_shift),
        ):
            if value is not None:
                values[f"{metric.name}_{label}"] = round(float(value), 4)
    return values


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def ks_statistic(current: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sample KS statistic: sup over x of |F_current(x) - F_baseline(x)|."""
    a = np.sort(np.asarray(current, dtype=np.float64))
    b = np.sort(np.asarray(baseline, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples must be non-empty")
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def unit_histogram(values: np.ndarray, bins: int) -> tuple[float, ...]:
    """Share of values per equal-width bin over [0, 1] (scores are clipped into the range)."""
    if values.size == 0:
        return tuple(0.0 for _ in range(bins))
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return tuple(float(c) / values.size for c in counts)


def compare(
    name: str, current: np.ndarray, baseline: np.ndarray, settings: DriftSettings
) -> DriftMetric:
    """Compare one metric; too few values on either side gives no verdict rather than a guess."""
    current = current[np.isfinite(current)]
    baseline = baseline[np.isfinite(baseline)]
    enough = current.size >= settings.min_samples and baseline.size >= settings.min_samples
    ks = ks_statistic(current, baseline) if current.size and baseline.size else None
    mean_current = float(current.mean()) if current.size else None
    mean_baseline = float(baseline.mean()) if baseline.size else None
    if not enough or ks is None or mean_current is None or mean_baseline is None:
        verdict = "insufficient_data"
    elif ks > settings.max_ks or abs(mean_current - mean_baseline) > settings.max_mean_shift:
        verdict = "shifted"
    else:
        verdict = "stable"
    return DriftMetric(
        name=name,
        n_current=int(current.size),
        n_baseline=int(baseline.size),
        mean_current=mean_current,
        mean_baseline=mean_baseline,
        ks_statistic=ks,
        current_histogram=unit_histogram(current, settings.bins),
        baseline_histogram=unit_histogram(baseline, settings.bins),
        verdict=verdict,
    )


def markdown_histogram(metric: DriftMetric, width: int = 24) -> str:
    """A text plot of both distributions, one row per bin; renders anywhere Markdown does."""
    bins = len(metric.current_histogram)
    peak = max([*metric.current_histogram, *metric.baseline_histogram, 1e-9])
    lines = [
        f"**{metric.name}** ({metric.verdict}; KS {_fmt(metric.ks_statistic)}, "
        f"mean {_fmt(metric.mean_current)} vs {_fmt(metric.mean_baseline)})",
        "",
        "| bin | this partition | share | baseline | share |",
        "| --- | --- | --- | --- | --- |",
    ]
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        current, baseline = metric.current_histogram[index], metric.baseline_histogram[index]
        lines.append(
            f"| {low:.1f}-{high:.1f} | `{_bar(current, peak, width)}` | {current:.0%} "
            f"| `{_bar(baseline, peak, width)}` | {baseline:.0%} |"
        )
    return "\n".join(lines)


def _bar(value: float, peak: float, width: int) -> str:
    return ("█" * round(width * value / peak)).ljust(width, " ")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def render_svg(report: DriftReport) -> str:
    """Side-by-side histograms (this partition vs the baseline) for every metric, as SVG."""
    panel_w, panel_h, margin = 360, 200, 40
    width = margin + len(report.metrics) * (panel_w + margin)
    height = panel_h + 2 * margin + 30
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{margin}" y="18" font-size="13">score distribution, partition '
        f"{escape(report.partition_key)} vs {len(report.baseline_partitions)} trailing "
        "partitions</text>",
    ]
    for panel, metric in enumerate(report.metrics):
        x0 = margin + panel * (panel_w + margin)
        y0 = margin
        bins = len(metric.current_histogram)
        peak = max([*metric.current_histogram, *metric.baseline_histogram, 1e-9])
        slot = panel_w / max(bins, 1)
        parts.append(
            f'<text x="{x0}" y="{y0 - 6}">{escape(metric.name)}: {escape(metric.verdict)}, '
            f"KS {_fmt(metric.ks_statistic)}, mean shift {_fmt(metric.mean_shift)}</text>"
        )
        parts.append(
            f'<line x1="{x0}" y1="{y0 + panel_h}" x2="{x0 + panel_w}" y2="{y0 + panel_h}" '
            'stroke="#333"/>'
        )
        for index in range(bins):
            for offset, (share, colour) in enumerate(
                (
                    (metric.current_histogram[index], "#1f77b4"),
                    (metric.baseline_histogram[index], "#bbbbbb"),
                )
            ):
                bar_h = panel_h * share / peak
                x = x0 + index * slot + offset * slot / 2 + 1
                parts.append(
                    f'<rect x="{x:.1f}" y="{y0 + panel_h - bar_h:.1f}" width="{slot / 2 - 2:.1f}" '
                    f'height="{bar_h:.1f}" fill="{colour}"/>'
                )
            if index % max(bins // 5, 1) == 0:
                parts.append(
                    f'<text x="{x0 + index * slot:.1f}" y="{y0 + panel_h + 14}">'
                    f"{index / bins:.1f}</text>"
                )
        parts.append(
            f'<text x="{x0}" y="{y0 + panel_h + 30}" fill="#1f77b4">■ this partition</text>'
            f'<text x="{x0 + 110}" y="{y0 + panel_h + 30}" fill="#888">■ baseline</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def drift_report(
    partition_key: str,
    current: dict[str, np.ndarray],
    baseline: dict[str, np.ndarray],
    baseline_partitions: Sequence[str],
    settings: DriftSettings,
) -> DriftReport:
    metrics = tuple(
        compare(name, current[name], baseline.get(name, np.empty(0)), settings) for name in current
    )
    return DriftReport(partition_key, tuple(baseline_partitions), metrics)
