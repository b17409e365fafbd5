"""From stored cells to the numbers people read: mean score per (task, method, length[, depth]) and the
effective context length.

Effective length follows RULER (Hsieh et al. 2024): the longest tested length whose mean score is at or
above the threshold, with every shorter tested length also at or above it (null when the shortest fails).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Point:
    """Mean score (and costs) of the ``ok`` cells at one coordinate."""

    score: float
    n: int
    seconds: float
    prefill_seconds: float
    peak_rss_mb: float
    kv_cache_bytes: float
    random_baseline: float | None = None  # mean expected score of a guess, from the samples' meta


def method_label(row: dict[str, Any]) -> str:
    """How a cell's method reads in reports: its spec, marked when the question came after compression."""
    mode = row.get("mode", "aware")
    return row["method"] if mode == "aware" else f"{row['method']} [question-{mode}]"


def _point(rows: list[dict[str, Any]]) -> Point:
    def median(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    return Point(
        score=statistics.fmean(r["score"] for r in rows),
        n=len(rows),
        seconds=median("seconds"),
        prefill_seconds=median("prefill_seconds"),
        peak_rss_mb=max(r["peak_rss_mb"] for r in rows),
        kv_cache_bytes=median("kv_cache_bytes"),
        random_baseline=_baseline(rows),
    )


def _baseline(rows: list[dict[str, Any]]) -> float | None:
    values = [r["meta"]["random_baseline"] for r in rows if (r.get("meta") or {}).get("random_baseline") is not None]
    return statistics.fmean(values) if values else None


def by_length(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int], Point]:
    """(task, method, context_length) -> Point over depths and samples."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            groups[(row["task"], row["method"], row["context_length"])].append(row)
    return {key: _point(group) for key, group in sorted(groups.items())}


def by_depth(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int, float | None], float]:
    """(task, method, context_length, depth) -> mean score over samples."""
    groups: dict[tuple[str, str, int, float | None], list[float]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            groups[(row["task"], row["method"], row["context_length"], row["depth"])].append(row["score"])
    return {key: statistics.fmean(scores) for key, scores in groups.items()}


def effective_length(points: dict[tuple[str, str, int], Point], threshold: float) -> dict[str, dict[str, int | None]]:
    """method -> task -> effective length in tokens (None when even the shortest length is below)."""
    curves: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for (task, method, length), point in points.items():
        curves[(method, task)].append((length, point.score))
    result: dict[str, dict[str, int | None]] = defaultdict(dict)
    for (method, task), curve in sorted(curves.items()):
        best = None
        for length, score in sorted(curve):
            if score < threshold:
                break
            best = length
        result[method][task] = best
    return dict(result)
