"""PNG figures: a depth x length heatmap per (task, method), accuracy-vs-length curves per task, the mean score on
the diffusion x scope grid of Goldman et al. 2024 per method, and for perplexity runs perplexity-vs-length curves
and loss by token position."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def slug(text: str) -> str:
    """A file-name-safe version of a task or method spec."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


def tokens_label(length: int) -> str:
    if length % (1024 * 1024) == 0:
        return f"{length // (1024 * 1024)}M"
    return f"{length // 1024}K" if length % 1024 == 0 else str(length)


def heatmap(
    scores: dict[tuple[int, float | None], float], task: str, method: str, native: int | None, path: Path
) -> Path:
    """Score by (depth, length): rows are depths (0 at the top), columns lengths; red 0 .. green 1."""
    lengths = sorted({length for length, _ in scores})
    depths = sorted({depth for _, depth in scores}, key=lambda d: -1.0 if d is None else d)
    grid = [[scores.get((length, depth), float("nan")) for length in lengths] for depth in depths]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.45 * len(depths)))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(lengths)), [tokens_label(x) + ("*" if native and x > native else "") for x in lengths])
    ax.set_yticks(range(len(depths)), ["-" if d is None else f"{d:g}" for d in depths])
    ax.set_xlabel("context length (tokens; * beyond the native window)")
    ax.set_ylabel("needle depth")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value == value:  # not NaN
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(f"{task} | {method}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(
    lines: dict[str, list[tuple[int, float]]], task: str, native: int | None, threshold: float, path: Path
) -> Path:
    """Mean score vs length, one line per row (``lines``: row -> [(length, score)]), with the threshold and the
    native window marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    lengths = _length_lines(ax, lines)
    ax.set_ylim(-0.05, 1.05)
    ax.axhline(threshold, color="gray", linestyle=":", linewidth=1, label=f"threshold {threshold:g}")
    _mark_native(ax, native, max(lengths, default=0))
    return _finish(fig, ax, task, "mean score", path)


def perplexity_curves(lines: dict[str, list[tuple[int, float]]], task: str, native: int | None, path: Path) -> Path:
    """Perplexity vs length, one line per row (``lines``: row -> [(length, perplexity)]), log scales."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.set_yscale("log")
    lengths = _length_lines(ax, lines)
    _mark_native(ax, native, max(lengths, default=0))
    return _finish(fig, ax, task, "perplexity (lower is better)", path)


def _length_lines(ax: plt.Axes, lines: dict[str, list[tuple[int, float]]]) -> list[int]:
    """One line per row (row -> [(length, y)]) over a log2 context-length axis ticked at each length; the lengths.
    Minor ticks go off on both axes, so a y scale must be set before."""
    for (row, line), (color, marker) in zip(lines.items(), line_styles(len(lines)), strict=True):
        ax.plot([x for x, _ in line], [y for _, y in line], color=color, marker=marker, label=row)
    lengths = sorted({x for line in lines.values() for x, _ in line})
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [tokens_label(x) for x in lengths])
    ax.minorticks_off()
    ax.set_xlabel("context length (tokens)")
    return lengths


MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def line_styles(count: int) -> list[tuple[tuple[float, ...], str]]:
    """(color, marker) for ``count`` lines, no two alike: tab10's colors up to ten lines, tab20's up to twenty,
    then the colors again with the next marker."""
    palette = plt.get_cmap("tab10" if count <= 10 else "tab20")
    colors = palette.N
    return [(tuple(palette(i % colors)), MARKERS[(i // colors) % len(MARKERS)]) for i in range(count)]


def _mark_native(ax: plt.Axes, native: int | None, top: int) -> None:
    if native and native <= top:
        ax.axvline(native, color="gray", linestyle="--", linewidth=1, label=f"native window {tokens_label(native)}")


def _finish(fig: plt.Figure, ax: plt.Axes, title: str, ylabel: str, path: Path) -> Path:
    """Label, grid and legend a line plot, then write it to ``path`` and free the figure."""
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes, never over a line
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_by_position(
    curves: dict[str, list[float]], title: str, bucket: int | None, native: int | None, path: Path
) -> Path:
    """Mean next-token loss per bucket of ``bucket`` positions, one line per row (``curves``: row -> bucket means)."""
    bucket = bucket or 1
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    top = 0
    for row, values in curves.items():
        starts = [i * bucket for i in range(len(values))]
        top = max(top, len(values) * bucket)
        ax.plot(starts, values, marker=".", label=row)
    _mark_native(ax, native, top)
    ax.set_xlabel(f"token position (buckets of {bucket})")
    return _finish(fig, ax, title, "mean next-token loss (nats)", path)


def taxonomy(grid: dict[str, dict[tuple[str, str], tuple[float, int]]], path: Path) -> Path:
    """One 2 x 2 panel per row (``grid``: row -> (diffusion, scope) -> (mean score, tasks)): diffusion down, scope
    across, low first; red 0 .. green 1, each cell marked with its score and number of tasks."""
    levels = ("low", "high")
    fig, axes = plt.subplots(1, len(grid), figsize=(0.6 + 2.8 * len(grid), 2.9), squeeze=False)
    for ax, (row, cells) in zip(axes[0], grid.items(), strict=True):
        values = [[cells.get((d, s), (float("nan"), 0))[0] for s in levels] for d in levels]
        image = ax.imshow(values, cmap="RdYlGn", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(2), levels)
        ax.set_yticks(range(2), levels)
        ax.set_xlabel("scope")
        if ax is axes[0][0]:
            ax.set_ylabel("diffusion")
        for i, d in enumerate(levels):
            for j, s in enumerate(levels):
                if (d, s) in cells:
                    score, tasks = cells[(d, s)]
                    ax.text(j, i, f"{score:.2f}\n({tasks} tasks)", ha="center", va="center", fontsize=8)
        ax.set_title(row, fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046, pad=0.04)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
