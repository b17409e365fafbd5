"""Write the report files from one or more results stores (runs merged): ``report.json`` (the declared schema,
every provenance, each store's run-level facts, cells with their details, aggregates with 95% intervals, baseline
ratios, effective length, failed cells: enough for :mod:`longreach.report.restore` to rebuild the stores),
``report.md``, a self-contained ``report.html`` (figures embedded) and the PNG figures. The markdown and HTML are
rendered from the same tables, whose columns come from the declared metrics.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longreach.report import plots
from longreach.report.aggregate import (
    QUADRANTS,
    Group,
    Key,
    Quadrant,
    baseline_ratios,
    by_depth,
    effective_length,
    groups,
    row_label,
    series_means,
    taxonomy_grid,
)
from longreach.results import AXES, METRIC, METRICS, ResultsStore

SCHEMA_VERSION = 2
FIGURE_KINDS = ("curves", "perplexity", "heatmaps")
COST_METRICS = ("seconds", "prefill_seconds", "decode_tok_s", "peak_rss_mb", "peak_gpu_mb", "kv_cache_bytes")


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True)
class Runs:
    """The cells, provenances and run-level facts of one or more stores."""

    rows: list[dict[str, Any]]
    provenance: dict[str, dict[str, Any]]
    threshold: float
    calibration: dict[str, Any]
    names: list[str]
    metas: dict[str, dict[str, Any]]  # each store's meta (its settings, code, label, wall seconds), by run name


def read_runs(folders: list[Path]) -> Runs:
    """Every cell of every store; provenance ids become ``run:id`` when several runs merge."""
    rows, provenance, calibration, thresholds, metas = [], {}, {}, [], {}
    names = [Path(f).name or str(f) for f in folders]
    for folder, name in zip(folders, names, strict=True):
        prefix = f"{name}:" if len(folders) > 1 else ""
        with ResultsStore.existing(Path(folder)) as store:
            meta = store.meta()
            metas[name] = meta
            thresholds.append(meta.get("threshold", 0.85))
            calibration.update(meta.get("calibration", {}))
            provenance.update({f"{prefix}{i}": p for i, p in store.provenances().items()})
            for row in store.rows():
                row["provenance_id"] = None if row["provenance_id"] is None else f"{prefix}{row['provenance_id']}"
                row["run"] = name
                row["label"] = meta.get("label", "")
                row["base_label"] = _without_model(row["label"], meta.get("model") or name.partition("@")[2])
                rows.append(row)
    return Runs(rows, provenance, thresholds[0], calibration, names, metas)


def _without_model(label: str, model: str) -> str:
    """A study stage's label without its trained model's name (``timing, yarn`` -> ``timing``; ``yarn`` -> ``""``);
    the model is the store's meta ``model``, or the part of a study store's name after ``@`` (``inside@yarn``)."""
    if not model or model == "base":
        return label
    parts = [part for part in label.split(", ") if part != model]
    return ", ".join(parts)


def render_report(
    folders: Path | list[Path],
    out: Path | None = None,
    threshold: float | None = None,
    baseline: str | None = None,
    preface: list[Table] | None = None,
    extra: dict[str, Any] | None = None,
    heatmaps: bool = True,
) -> Path:
    """Render every report file into ``out`` (default: the one run's folder) from the runs' stores; returns the
    path of report.html. ``baseline``: a method spec whose rows every other row is divided by; ``preface``: tables
    shown first (a study's stage table); ``extra``: entries added to report.json; ``heatmaps``: False draws only the
    accuracy-vs-length curves (a committed report of many rows stays small)."""
    folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
    out = Path(out) if out is not None else folders[0]
    out.mkdir(parents=True, exist_ok=True)
    runs = read_runs(folders)
    threshold = threshold if threshold is not None else runs.threshold
    native = next(
        (p.get("native_context_length") for p in runs.provenance.values() if p.get("native_context_length")), None
    )
    points = groups(runs.rows)
    effective = effective_length(points, threshold)
    ratios = baseline_ratios(points, baseline) if baseline else {}
    grid = taxonomy_grid(points)
    figures = _figures(out, runs.rows, points, native, threshold, heatmaps)
    if heatmaps and grid:
        figures["heatmaps"].append(plots.taxonomy(grid, out / "taxonomy.png").name)
    document = _json_document(runs, threshold, native, points, effective, ratios, baseline, figures)
    document["taxonomy_grid"] = {
        row: {f"{d}/{s}": {"score": score, "tasks": n} for (d, s), (score, n) in cells.items()}
        for row, cells in grid.items()
    }
    document.update(extra or {})
    (out / "report.json").write_text(json.dumps(document, indent=1))
    tables = (preface or []) + _tables(runs, points, effective, ratios, baseline, native, threshold)
    if grid:
        tables.append(_taxonomy_table(grid))
    (out / "report.md").write_text(_markdown(runs, tables, figures))
    html_path = out / "report.html"
    html_path.write_text(_html(runs, tables, figures, out))
    return html_path


def _figures(
    out: Path,
    rows: list[dict[str, Any]],
    points: dict[Key, Group],
    native: int | None,
    threshold: float,
    heatmaps: bool,
) -> dict[str, list[str]]:
    depth_scores = by_depth(rows) if heatmaps else {}
    figures: dict[str, list[str]] = {"heatmaps": [], "curves": [], "perplexity": []}
    for task, row in sorted({(task, row) for (task, row, _, _) in depth_scores}):
        scores = {(length, depth): s for (t, r, length, depth), s in depth_scores.items() if (t, r) == (task, row)}
        path = out / f"heatmap_{plots.slug(task)}__{plots.slug(row)}.png"
        figures["heatmaps"].append(plots.heatmap(scores, task, row, native, path).name)
    for task in sorted({task for (task, _, _), group in points.items() if group.scored}):
        lines = {
            row: sorted(
                (length, group.score.value) for (t, r, length), group in points.items() if t == task and r == row
            )
            for row in sorted({r for (t, r, _) in points if t == task})
        }
        path = out / f"curve_{plots.slug(task)}.png"
        figures["curves"].append(plots.curves(lines, task, native, threshold, path).name)
    figures["perplexity"] = _perplexity_figures(out, rows, points, native)
    return figures


def _perplexity_figures(
    out: Path, rows: list[dict[str, Any]], points: dict[Key, Group], native: int | None
) -> list[str]:
    """Per perplexity task: perplexity vs length (one line per row) and loss by position at each length."""
    names = []
    positions = series_means(rows, "loss_by_position")
    for task in sorted({task for (task, _, _), group in points.items() if "perplexity" in group.metrics}):
        lines = {
            row: sorted((n, g.metrics["perplexity"].value) for (t, r, n), g in points.items() if (t, r) == (task, row))
            for row in sorted({r for (t, r, _), g in points.items() if t == task and "perplexity" in g.metrics})
        }
        path = out / f"perplexity_{plots.slug(task)}.png"
        names.append(plots.perplexity_curves(lines, task, native, path).name)
        bucket = next((r["meta"].get("bucket") for r in rows if r["task"] == task and r["status"] == "ok"), None)
        for length in sorted({n for (t, _, n) in positions if t == task}):
            curves = {r: values for (t, r, n), values in positions.items() if (t, n) == (task, length)}
            path = out / f"loss_by_position_{plots.slug(task)}_{length}.png"
            title = f"{task} at {plots.tokens_label(length)}"
            names.append(plots.loss_by_position(curves, title, bucket, native, path).name)
    return names


def _estimate_dict(group: Group) -> dict[str, Any]:
    return {name: asdict(estimate) for name, estimate in group.metrics.items()}


def _json_document(
    runs: Runs,
    threshold: float,
    native: int | None,
    points: dict[Key, Group],
    effective: dict[str, dict[str, int | None]],
    ratios: dict[Key, dict[str, float]],
    baseline: str | None,
    figures: dict[str, list[str]],
) -> dict[str, Any]:
    fields = [axis.name for axis in AXES] + [metric.name for metric in METRICS]
    cells = [
        {
            **{name: row.get(name) for name in fields},
            "row": row_label(row),
            "prediction": row["prediction"],
            "answers": row["answers"],
            "provenance_id": row["provenance_id"],
            "run": row["run"],
            "beyond_native_window": bool(native) and row["context_length"] > native,
            "meta": row["meta"],
            **({"series": row["series"]} if row["series"] else {}),
        }
        for row in runs.rows
        if row["status"] == "ok"
    ]
    failed = [
        {**{axis.name: row[axis.name] for axis in AXES}, "error": row["error"], "run": row["run"], "meta": row["meta"]}
        for row in runs.rows
        if row["status"] == "error"
    ]
    summary = [
        {
            "task": task,
            "row": row,
            "method": group.method,
            "context_length": length,
            "metrics": _estimate_dict(group),
            "ratio_to_baseline": ratios.get((task, row, length)),
            "beyond_native_window": bool(native) and length > native,
        }
        for (task, row, length), group in points.items()
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "schema": {
            "axes": [{"name": a.name, "doc": a.doc} for a in AXES],
            "metrics": [asdict(m) for m in METRICS],
        },
        "runs": runs.names,
        "stores": {name: {k: v for k, v in meta.items() if k != "study"} for name, meta in runs.metas.items()},
        "provenance": runs.provenance,
        "threshold": threshold,
        "native_context_length": native,
        "baseline": baseline,
        "cells": cells,
        "summary": summary,
        "effective_length": effective,
        "failed_cells": failed,
        "calibration": runs.calibration,
        "figures": figures,
    }


def _length_labels(lengths: list[int], native: int | None) -> dict[int, str]:
    return {x: plots.tokens_label(x) + ("*" if native and x > native else "") for x in lengths}


def _metric_text(name: str, value: float) -> str:
    if name == "kv_cache_bytes" or name == "compressed_kv_bytes":
        return f"{value / 2**20:.1f}"
    return f"{value:.0f}" if name in ("peak_rss_mb", "peak_gpu_mb") else f"{value:.2f}"


def _tables(
    runs: Runs,
    points: dict[Key, Group],
    effective: dict[str, dict[str, int | None]],
    ratios: dict[Key, dict[str, float]],
    baseline: str | None,
    native: int | None,
    threshold: float,
) -> list[Table]:
    lengths = sorted({length for (_, _, length) in points})
    label = _length_labels(lengths, native)
    pairs = sorted({(t, r) for (t, r, _), g in points.items() if g.scored})
    tables = []
    if runs.calibration:
        tables.append(_calibration_table(runs.calibration))
    if pairs:
        tables += _score_tables(points, pairs, lengths, label, effective, threshold)
    perplexity = _perplexity_table(points, lengths, label)
    if perplexity is not None:
        tables.append(perplexity)
    tables.append(_cost_table(points, label))
    ratio = _ratio_table(points, ratios, baseline, label) if baseline else None
    if ratio is not None:
        tables.append(ratio)
    mix = _provenance_mix(runs)
    if mix is not None:
        tables.append(mix)
    failed = [r for r in runs.rows if r["status"] == "error"]
    if failed:
        tables.append(
            Table(
                f"Failed cells ({len(failed)}; rerun with --resume to retry)",
                ["task", "method", "length", "depth", "index", "error"],
                [
                    [r["task"], row_label(r), str(r["context_length"]), str(r["depth"]), str(r["index"]), r["error"]]
                    for r in failed
                ],
            )
        )
    return tables


def _score_tables(
    points: dict[Key, Group],
    pairs: list[tuple[str, str]],
    lengths: list[int],
    label: dict[int, str],
    effective: dict[str, dict[str, int | None]],
    threshold: float,
) -> list[Table]:
    """Mean score by length and the effective context length, for the tasks that score answers."""
    tables = []
    tables.append(
        Table(
            "Mean score by length [95% Wilson interval]",
            ["task", "method"] + [label[x] for x in lengths] + ["n", "random baseline"],
            [
                [task, row]
                + [points[(task, row, x)].score.text() if (task, row, x) in points else "" for x in lengths]
                + [str(max(points[(task, row, x)].score.n for x in lengths if (task, row, x) in points))]
                + [_baseline_text([g for (t, r, _), g in points.items() if (t, r) == (task, row)])]
                for task, row in pairs
            ],
            "n: cells per length (depths x samples); random baseline: the expected score of a guess (each family "
            "states its guess)"
            + ("; * beyond the model's native window" if any("*" in v for v in label.values()) else ""),
        )
    )
    tasks = sorted({t for (t, _) in pairs})
    tables.append(
        Table(
            f"Effective context length (score >= {threshold:g} at this and every shorter length)",
            ["method"] + tasks,
            [[row] + [_tokens_or_dash(effective[row].get(t)) for t in tasks] for row in sorted(effective)],
        )
    )
    return tables


def _perplexity_table(points: dict[Key, Group], lengths: list[int], label: dict[int, str]) -> Table | None:
    """Perplexity by length for the tasks that measure token losses (None when there are none)."""
    pairs = sorted({(t, r) for (t, r, _), g in points.items() if "perplexity" in g.metrics})
    if not pairs:
        return None
    shown = [x for x in lengths if any((t, r, x) in points for t, r in pairs)]
    return Table(
        "Perplexity by length [95% bootstrap interval over samples]",
        ["task", "method"] + [label[x] for x in shown] + ["n"],
        [
            [task, row]
            + [points[(task, row, x)].metrics["perplexity"].text() if (task, row, x) in points else "" for x in shown]
            + [str(max(points[(task, row, x)].n for x in shown if (task, row, x) in points))]
            for task, row in pairs
        ],
        "perplexity = exp(mean next-token loss over the text's tokens); a length's samples are consecutive spans "
        "of the same file, the same for every row; n: samples per length",
    )


def _taxonomy_table(grid: dict[str, dict[Quadrant, tuple[float, int]]]) -> Table:
    """Mean score per (diffusion, scope) quadrant of Goldman et al. 2024, one line per row."""
    return Table(
        "Mean score on the diffusion x scope grid (Goldman et al. 2024)",
        ["method"] + [f"{d} diffusion, {s} scope" for d, s in QUADRANTS],
        [
            [row] + [f"{cells[q][0]:.2f} ({cells[q][1]} tasks)" if q in cells else "-" for q in QUADRANTS]
            for row, cells in grid.items()
        ],
        "each family states its diffusion (how hard the needed information is to find) and scope (how much of it "
        "is needed), see `longreach tasks`; a cell is the mean over its tasks of each task's mean score over lengths",
    )


def _cost_table(points: dict[Key, Group], label: dict[int, str]) -> Table:
    """Costs per (row, length), over tasks: medians [95% bootstrap interval] of times, maxima of memory."""
    merged: dict[tuple[str, int], list[Group]] = {}
    for (_, row, length), group in points.items():
        merged.setdefault((row, length), []).append(group)
    present = [  # metrics measured somewhere (peak GPU memory stays 0 on a CPU)
        m for m in COST_METRICS if any(m in g.metrics and g.metrics[m].value for gs in merged.values() for g in gs)
    ]
    header = ["method", "length", "cells"] + [f"{m} ({_unit(m)})" for m in present]
    rows = []
    for (row, length), members in sorted(merged.items()):
        cells = [row, label[length], str(sum(g.n for g in members))]
        for name in present:
            estimates = [g.metrics[name] for g in members if name in g.metrics]
            if not estimates:
                cells.append("-")
                continue
            worst = max(estimates, key=lambda e: e.value)
            digits = 2 if METRIC[name].interval == "bootstrap" else 0
            if METRIC[name].interval == "bootstrap":
                cells.append(worst.text(digits))
            else:
                cells.append(_metric_text(name, worst.value))
        rows.append(cells)
    return Table(
        "Cost per cell (medians [95% bootstrap interval] of times; peak memory is the maximum; the slowest task)",
        header,
        rows,
        "KV cache: physical bytes of the cache tensors (MiB); peak RSS: the process's resident high-water mark",
    )


def _unit(name: str) -> str:
    return "MiB" if name in ("kv_cache_bytes", "compressed_kv_bytes") else METRIC[name].unit


def _ratio_table(
    points: dict[Key, Group], ratios: dict[Key, dict[str, float]], baseline: str, label: dict[int, str]
) -> Table | None:
    """Each row's aggregates over the baseline row's; None when no row but the baseline has one (no empty table)."""
    candidates = ("score", "perplexity", "seconds", "prefill_seconds", "peak_rss_mb", "kv_cache_bytes")
    shown = [m for m in candidates if any(m in values for values in ratios.values())]
    rows = [
        [task, row, label[length]] + [f"{ratios[(task, row, length)].get(m, float('nan')):.3f}" for m in shown]
        for (task, row, length) in sorted(ratios)
        if row != points[(task, row, length)].reference_row(baseline)
    ]
    if not rows:
        return None
    return Table(
        f"Ratio to the baseline row ({baseline}) at the same task and length",
        ["task", "method", "length"] + [f"{m} / baseline" for m in shown],
        rows,
        "each ratio divides the row's aggregate (mean score, median times, max memory) by the baseline's; a trained "
        "model's rows are divided by the untrained model's baseline row",
    )


def _provenance_mix(runs: Runs) -> Table | None:
    """A table of the code versions the cells ran under, when there is more than one."""
    counts = Counter(r["provenance_id"] for r in runs.rows if r["status"] == "ok")
    versions: Counter[tuple[str, str]] = Counter()
    for identifier, count in counts.items():
        p = runs.provenance.get(identifier, {}) if identifier is not None else {}
        versions[(str(p.get("git_sha")), str(p.get("source_hash", "unrecorded")))] += count
    if len(versions) <= 1:
        return None
    return Table(
        f"Provenance: the cells ran under {len(versions)} code versions",
        ["git sha", "source hash", "cells"],
        [[sha, source, str(n)] for (sha, source), n in versions.most_common()],
        "a resumed run mixed code versions (--resume-anyway); each cell's provenance is in report.json",
    )


def _calibration_table(calibration: dict[str, Any]) -> Table:
    return Table(
        "Calibrated methods (auto: lowest passkey answer NLL at the target length)",
        ["spec", "resolved to", "candidates (answer NLL)"],
        [
            [spec, c["resolved"], ", ".join(f"{k} {v:.3f}" for k, v in sorted(c["nll"].items(), key=lambda kv: kv[1]))]
            for spec, c in calibration.items()
        ],
    )


def _baseline_text(members: list[Group]) -> str:
    values = [g.metrics["random_baseline"].value for g in members if "random_baseline" in g.metrics]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.2f}" if mean >= 0.01 or mean == 0 else f"{mean:.1e}"


def _tokens_or_dash(value: int | None) -> str:
    return "-" if value is None else f"{plots.tokens_label(value)} ({value})"


def _provenance_line(runs: Runs) -> str:
    """The provenance shared by the cells (the first record's; a mix gets its own table)."""
    if not runs.provenance:
        return ""
    first = runs.provenance[min(runs.provenance)]
    keys = (
        "model",
        "weights",
        "native_context_length",
        "dtype",
        "device",
        "prompt_format",
        "longreach_version",
        "git_sha",
        "torch_version",
        "transformers_version",
        "machine",
        "cpu",
        "cpu_flags",
        "created_at",
    )
    seed = (first.get("settings") or {}).get("seed", first.get("seed"))
    line = "; ".join(f"{k}: {first[k]}" for k in keys if first.get(k) is not None)
    return line + (f"; seed: {seed}" if seed is not None else "")


def _markdown(runs: Runs, tables: list[Table], figures: dict[str, list[str]]) -> str:
    lines = ["# longreach report", "", _provenance_line(runs), ""]
    for table in tables:
        lines += [f"## {table.title}", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
        lines += (["", table.note] if table.note else []) + [""]
    lines += ["## Figures", ""] + [f"![{name}]({name})" for kind in FIGURE_KINDS for name in figures[kind]]
    return "\n".join(lines) + "\n"


def _html(runs: Runs, tables: list[Table], figures: dict[str, list[str]], out: Path) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>longreach report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child,td:nth-child(2){text-align:left}img{max-width:100%;margin:.5em}"
        ".prov{color:#555;font-size:.9em}",
        "</style></head><body><h1>longreach report</h1>",
        f"<p class='prov'>{esc(_provenance_line(runs))}</p>",
    ]
    for table in tables:
        parts.append(f"<h2>{esc(table.title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header))
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows]
        parts.append("</table>" + (f"<p>{esc(table.note)}</p>" if table.note else ""))
    parts.append("<h2>Figures</h2>")
    for kind in FIGURE_KINDS:
        for name in figures[kind]:
            data = base64.b64encode((out / name).read_bytes()).decode()
            parts.append(f"<img alt='{esc(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
