"""Write the report files of an output folder from its results store.

``report.json`` (stable schema: provenance, cells, effective_length, plus summary and failed_cells),
``report.md``, a self-contained ``report.html`` (figures embedded as data URIs) and the PNG figures.
The markdown and HTML are rendered from the same tables.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from longreach.report import plots
from longreach.report.aggregate import Point, by_depth, by_length, effective_length, method_label
from longreach.runner.store import ResultsStore

SCHEMA_VERSION = 1
_CELL_FIELDS = (
    "task",
    "method",
    "context_length",
    "depth",
    "index",
    "mode",
    "score",
    "seconds",
    "prefill_seconds",
    "peak_rss_mb",
    "kv_cache_bytes",
    "realized_tokens",
    "realized_depth",
    "new_tokens",
    "prediction",
    "answers",
)


@dataclass(frozen=True)
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def render_report(folder: Path, threshold: float | None = None) -> Path:
    """Render every report file in ``folder`` from its store; returns the path of report.html."""
    folder = Path(folder)
    with ResultsStore.existing(folder) as store:
        meta = store.meta()
        rows = [{**row, "method": method_label(row)} for row in store.rows()]
    threshold = threshold if threshold is not None else meta.get("threshold", 0.85)
    provenance = meta.get("provenance", {})
    native = provenance.get("native_context_length")
    points = by_length(rows)
    effective = effective_length(points, threshold)
    figures = _figures(folder, rows, points, native, threshold)
    document = _json_document(provenance, threshold, native, rows, points, effective, figures)
    document["calibration"] = meta.get("calibration", {})
    (folder / "report.json").write_text(json.dumps(document, indent=1))
    tables = _tables(points, effective, rows, native, threshold)
    if document["calibration"]:
        tables.insert(
            0,
            Table(
                "Calibrated methods (auto: lowest passkey answer NLL at the target length)",
                ["spec", "resolved to", "candidates (answer NLL)"],
                [
                    [
                        spec,
                        c["resolved"],
                        ", ".join(f"{k} {v:.3f}" for k, v in sorted(c["nll"].items(), key=lambda kv: kv[1])),
                    ]
                    for spec, c in document["calibration"].items()
                ],
            ),
        )
    (folder / "report.md").write_text(_markdown(provenance, tables, figures, folder))
    html_path = folder / "report.html"
    html_path.write_text(_html(provenance, tables, figures, folder))
    return html_path


def _figures(
    folder: Path,
    rows: list[dict[str, Any]],
    points: dict[tuple[str, str, int], Point],
    native: int | None,
    threshold: float,
) -> dict[str, list[str]]:
    depth_scores = by_depth(rows)
    figures: dict[str, list[str]] = {"heatmaps": [], "curves": []}
    pairs = sorted({(task, method) for (task, method, _, _) in depth_scores})
    for task, method in pairs:
        scores = {(length, depth): s for (t, m, length, depth), s in depth_scores.items() if (t, m) == (task, method)}
        path = folder / f"heatmap_{plots.slug(task)}__{plots.slug(method)}.png"
        figures["heatmaps"].append(plots.heatmap(scores, task, method, native, path).name)
    for task in sorted({task for (task, _, _) in points}):
        path = folder / f"curve_{plots.slug(task)}.png"
        figures["curves"].append(plots.curves(points, task, native, threshold, path).name)
    return figures


def _json_document(
    provenance: dict[str, Any],
    threshold: float,
    native: int | None,
    rows: list[dict[str, Any]],
    points: dict[tuple[str, str, int], Point],
    effective: dict[str, dict[str, int | None]],
    figures: dict[str, list[str]],
) -> dict[str, Any]:
    def beyond(length: int) -> bool:
        return bool(native) and length > native

    cells = [
        {**{k: row[k] for k in _CELL_FIELDS}, "beyond_native_window": beyond(row["context_length"])}
        for row in rows
        if row["status"] == "ok"
    ]
    failed = [
        {k: row[k] for k in ("task", "method", "context_length", "depth", "index", "error")}
        for row in rows
        if row["status"] == "error"
    ]
    summary = [
        {"task": t, "method": m, "context_length": length, **asdict(p), "beyond_native_window": beyond(length)}
        for (t, m, length), p in points.items()
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance,
        "threshold": threshold,
        "native_context_length": native,
        "cells": cells,
        "effective_length": effective,
        "summary": summary,
        "failed_cells": failed,
        "figures": figures,
    }


def _tables(
    points: dict[tuple[str, str, int], Point],
    effective: dict[str, dict[str, int | None]],
    rows: list[dict[str, Any]],
    native: int | None,
    threshold: float,
) -> list[Table]:
    lengths = sorted({length for (_, _, length) in points})
    label = {x: plots.tokens_label(x) + ("*" if native and x > native else "") for x in lengths}
    scores = Table(
        "Mean score by length",
        ["task", "method"] + [label[x] for x in lengths] + ["random baseline"],
        [
            [task, method]
            + [f"{points[(task, method, x)].score:.2f}" if (task, method, x) in points else "" for x in lengths]
            + [_baseline_text([p for (t, m, _), p in points.items() if (t, m) == (task, method)])]
            for task, method in sorted({(t, m) for (t, m, _) in points})
        ],
        "random baseline: the expected score of a guess (each family states its guess), mean over the cells"
        + ("; * beyond the model's native window" if any("*" in v for v in label.values()) else ""),
    )
    tasks = sorted({t for (t, _, _) in points})
    eff = Table(
        f"Effective context length (score >= {threshold:g} at this and every shorter length)",
        ["method"] + tasks,
        [[method] + [_tokens_or_dash(effective[method].get(t)) for t in tasks] for method in sorted(effective)],
    )
    costs = Table(
        "Cost per cell (medians; peak RSS is the maximum)",
        ["method", "length", "cells", "seconds", "prefill s", "peak RSS MiB", "KV cache MiB"],
        _cost_rows(points),
    )
    tables = [scores, eff, costs]
    failed = [r for r in rows if r["status"] == "error"]
    if failed:
        tables.append(
            Table(
                f"Failed cells ({len(failed)}; rerun with --resume to retry)",
                ["task", "method", "length", "depth", "index", "error"],
                [
                    [r["task"], r["method"], str(r["context_length"]), str(r["depth"]), str(r["index"]), r["error"]]
                    for r in failed
                ],
            )
        )
    return tables


def _cost_rows(points: dict[tuple[str, str, int], Point]) -> list[list[str]]:
    merged: dict[tuple[str, int], list[Point]] = {}
    for (_, method, length), point in points.items():
        merged.setdefault((method, length), []).append(point)
    rows = []
    for (method, length), group in sorted(merged.items()):
        n = sum(p.n for p in group)
        rows.append(
            [
                method,
                plots.tokens_label(length),
                str(n),
                f"{max(p.seconds for p in group):.2f}",
                f"{max(p.prefill_seconds for p in group):.2f}",
                f"{max(p.peak_rss_mb for p in group):.0f}",
                f"{max(p.kv_cache_bytes for p in group) / 2**20:.1f}",
            ]
        )
    return rows


def _baseline_text(points: list[Point]) -> str:
    values = [p.random_baseline for p in points if p.random_baseline is not None]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.2f}" if mean >= 0.01 or mean == 0 else f"{mean:.1e}"


def _tokens_or_dash(value: int | None) -> str:
    return "-" if value is None else f"{plots.tokens_label(value)} ({value})"


def _provenance_line(provenance: dict[str, Any]) -> str:
    keys = (
        "model",
        "native_context_length",
        "dtype",
        "seed",
        "longreach_version",
        "git_sha",
        "torch_version",
        "transformers_version",
        "machine",
        "created_at",
    )
    return "; ".join(f"{k}: {provenance[k]}" for k in keys if k in provenance)


def _markdown(provenance: dict[str, Any], tables: list[Table], figures: dict[str, list[str]], folder: Path) -> str:
    lines = ["# longreach report", "", _provenance_line(provenance), ""]
    for table in tables:
        lines += [f"## {table.title}", "", "| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
        lines += (["", table.note] if table.note else []) + [""]
    lines += ["## Figures", ""] + [f"![{name}]({name})" for kind in ("curves", "heatmaps") for name in figures[kind]]
    return "\n".join(lines) + "\n"


def _html(provenance: dict[str, Any], tables: list[Table], figures: dict[str, list[str]], folder: Path) -> str:
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>longreach report</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}"
        "td:first-child,th:first-child,td:nth-child(2){text-align:left}img{max-width:100%;margin:.5em}"
        ".prov{color:#555;font-size:.9em}",
        "</style></head><body><h1>longreach report</h1>",
        f"<p class='prov'>{esc(_provenance_line(provenance))}</p>",
    ]
    for table in tables:
        parts.append(f"<h2>{esc(table.title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.header))
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows]
        parts.append("</table>" + (f"<p>{esc(table.note)}</p>" if table.note else ""))
    parts.append("<h2>Figures</h2>")
    for kind in ("curves", "heatmaps"):
        for name in figures[kind]:
            data = base64.b64encode((folder / name).read_bytes()).decode()
            parts.append(f"<img alt='{esc(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
