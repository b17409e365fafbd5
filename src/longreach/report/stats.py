"""Confidence intervals for the report: Wilson score intervals for accuracies, percentile bootstrap intervals for
medians of times and means of losses (fixed seed, so a report renders the same twice)."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
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


AGGREGATE: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "max": max,
    "geomean": statistics.geometric_mean,
}


def bootstrap(
    values: list[float],
    statistic: Callable[[list[float]], float] = statistics.median,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of ``statistic`` (the median by default) of ``values``."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    rng = random.Random(seed)
    draws = sorted(statistic(rng.choices(values, k=len(values))) for _ in range(resamples))
    return (draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1])


def estimate(values: list[float], aggregation: str, interval: str) -> Estimate:
    """The aggregate of ``values`` (mean, median, max or geometric mean) with the interval the metric declares
    (``bootstrap``: of that aggregate)."""
    if not values:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = AGGREGATE[aggregation](values)
    if interval == "wilson":
        low, high = wilson(value, len(values))
    elif interval == "bootstrap":
        low, high = bootstrap(values, AGGREGATE[aggregation])
    else:
        low = high = value
    return Estimate(value, low, high, len(values))
