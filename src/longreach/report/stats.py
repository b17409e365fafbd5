"""Confidence intervals for the report: Wilson score intervals for accuracies, percentile bootstrap intervals for
medians of times (fixed seed, so a report renders the same twice)."""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass

Z95 = 1.959964
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """An aggregate of ``n`` cells with its 95% interval (``low`` = ``high`` = value when none applies)."""

    value: float
    low: float
    high: float
    n: int

    def text(self, digits: int = 2, interval: bool = True) -> str:
        if math.isnan(self.value):
            return "-"
        main = f"{self.value:.{digits}f}"
        if not interval or (self.low == self.value == self.high):
            return main
        return f"{main} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def wilson(mean: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``mean`` over ``n`` trials (fractional scores count fractionally)."""
    if n == 0:
        return (math.nan, math.nan)
    denominator = 1 + z * z / n
    centre = (mean + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(0.0, mean * (1 - mean)) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_median(values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the median of ``values``."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return (medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1])


def estimate(values: list[float], aggregation: str, interval: str) -> Estimate:
    """The aggregate of ``values`` (mean, median or max) with the interval the metric declares."""
    if not values:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = {"mean": statistics.fmean, "median": statistics.median, "max": max}[aggregation](values)
    if interval == "wilson":
        low, high = wilson(value, len(values))
    elif interval == "bootstrap":
        low, high = bootstrap_median(values)
    else:
        low = high = value
    return Estimate(value, low, high, len(values))
