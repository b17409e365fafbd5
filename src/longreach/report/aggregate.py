"""From stored cells to the numbers people read: every declared metric aggregated per (task, row, length) with its
interval, ratios to a baseline row, the effective context length, and mean scores on the diffusion x scope grid.

A *row* is what a line of a table compares: the method stack, labelled with the backend, the question mode and
the prompt format where they are not the defaults. Effective length follows RULER (Hsieh et al. 2024): the longest
tested length whose mean score is at least the threshold, with every shorter tested length also at least it.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from longreach import params
from longreach.report.stats import Estimate, estimate
from longreach.results import AXIS, METRICS
from longreach.tasks import TASKS

NO_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0)

Key = tuple[str, str, int]  # (task, row, context_length)


def row_label(row: dict[str, Any]) -> str:
    """How a cell's method reads in reports: its spec, marked with a non-default backend, question mode or prompt."""
    label = row["method"]
    if row.get("backend", "hf") != AXIS["backend"].default:
        label += f" @{row['backend']}"
    if row.get("mode", "aware") != AXIS["mode"].default:
        label += f" [question-{row['mode']}]"
    if row.get("prompt", "raw") != AXIS["prompt"].default:
        label += f" [{row['prompt']}]"
    if row.get("label"):  # a run that asked to be kept apart when runs merge (a study's timing stage)
        label += f" ({row['label']})"
    return label


@dataclass(frozen=True)
class Group:
    """The ``ok`` cells at one (task, row, length): each declared metric's estimate."""

    task: str
    row: str
    method: str
    context_length: int
    metrics: dict[str, Estimate]
    base_marks: str = ""  # the row's backend/mode/prompt/label marks without a trained model's name

    def reference_row(self, baseline: str) -> str:
        """The row this one is divided by: ``baseline`` with the same marks, on the untrained model for a trained
        model's row (``none (yarn)`` is divided by ``none``)."""
        return baseline + self.base_marks

    @property
    def score(self) -> Estimate:
        """The mean score (an empty estimate for a perplexity group, which has losses instead)."""
        return self.metrics.get("score", NO_ESTIMATE)

    @property
    def n(self) -> int:
        """How many cells the group holds."""
        return max(estimate.n for estimate in self.metrics.values())

    @property
    def scored(self) -> bool:
        return "score" in self.metrics


def groups(rows: list[dict[str, Any]]) -> dict[Key, Group]:
    """(task, row label, length) -> :class:`Group` over depths and samples."""
    cells: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            cells[(row["task"], row_label(row), row["context_length"])].append(row)
    result = {}
    for key, members in sorted(cells.items()):
        metrics = {}
        for metric in METRICS:
            values = [float(r[metric.name]) for r in members if r.get(metric.name) is not None]
            if values:
                metrics[metric.name] = estimate(values, metric.aggregation, metric.interval)
        first = members[0]
        base_marks = row_label({**first, "method": "", "label": first.get("base_label", first.get("label", ""))})
        result[key] = Group(key[0], key[1], first["method"], key[2], metrics, base_marks)
    return result


def by_depth(rows: list[dict[str, Any]]) -> dict[tuple[str, str, int, float | None], float]:
    """(task, row label, length, depth) -> mean score over samples."""
    scores: dict[tuple[str, str, int, float | None], list[float]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok" and row.get("score") is not None:
            scores[(row["task"], row_label(row), row["context_length"], row["depth"])].append(row["score"])
    return {key: sum(values) / len(values) for key, values in scores.items()}


def effective_length(points: dict[Key, Group], threshold: float) -> dict[str, dict[str, int | None]]:
    """row -> task -> effective length in tokens (None when even the shortest length is below)."""
    curves: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for (task, row, length), group in points.items():
        if group.scored:
            curves[(row, task)].append((length, group.score.value))
    result: dict[str, dict[str, int | None]] = defaultdict(dict)
    for (row, task), curve in sorted(curves.items()):
        best = None
        for length, score in sorted(curve):
            if score < threshold:
                break
            best = length
        result[row][task] = best
    return dict(result)


def baseline_ratios(points: dict[Key, Group], baseline: str) -> dict[Key, dict[str, float]]:
    """(task, row, length) -> metric -> the row's aggregate over the baseline row's at the same task and length (the
    baseline row is the one whose method is ``baseline`` with the same backend/mode/prompt marks, on the untrained
    model for a trained model's rows: :meth:`Group.reference_row`)."""
    ratios: dict[Key, dict[str, float]] = {}
    for (task, row, length), group in points.items():
        reference = points.get((task, group.reference_row(baseline), length))
        if reference is None:
            continue
        ratios[(task, row, length)] = {
            name: estimate.value / reference.metrics[name].value
            for name, estimate in group.metrics.items()
            if name in reference.metrics and reference.metrics[name].value not in (0, 0.0)
        }
    return ratios


def series_means(rows: list[dict[str, Any]], name: str) -> dict[Key, list[float]]:
    """(task, row, length) -> the declared series ``name`` averaged point by point over the group's cells."""
    curves: dict[Key, list[list[float]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok" and name in (row.get("series") or {}):
            curves[(row["task"], row_label(row), row["context_length"])].append(row["series"][name])
    return {
        key: [statistics.fmean(points) for points in zip(*members, strict=False)]
        for key, members in sorted(curves.items())
    }


Quadrant = tuple[str, str]  # (diffusion, scope)
QUADRANTS: tuple[Quadrant, ...] = (("low", "low"), ("low", "high"), ("high", "low"), ("high", "high"))


def quadrant(spec: str) -> Quadrant | None:
    """The task's place on the grid of Goldman et al. 2024 (its family's diffusion and scope); None for a task
    that states none (``jsonl``) or that this code no longer knows (a store written under an older name)."""
    name = params.split_spec(spec)[0]
    if name not in TASKS:
        return None
    family = TASKS.get(name).family
    if family.diffusion is None or family.scope is None:
        return None
    return family.diffusion, family.scope


def taxonomy_grid(points: dict[Key, Group]) -> dict[str, dict[Quadrant, tuple[float, int]]]:
    """row -> (diffusion, scope) -> (mean score, tasks): each task's mean over its lengths, then the mean over the
    quadrant's tasks, so every task weighs the same however many lengths or cells it has."""
    per_task: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (task, row, _), group in points.items():
        if group.scored:
            per_task[(row, task)].append(group.score.value)
    cells: dict[str, dict[Quadrant, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (row, task), scores in sorted(per_task.items()):
        place = quadrant(task)
        if place is not None:
            cells[row][place].append(sum(scores) / len(scores))
    return {
        row: {place: (sum(means) / len(means), len(means)) for place, means in sorted(by_place.items())}
        for row, by_place in sorted(cells.items())
    }
