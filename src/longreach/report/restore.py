"""Rebuild the results stores of a report from its ``report.json``: one store per run, every cell (ok and failed)
with its provenance, details and series, and each store's run-level facts. A committed report thus carries a long
study across machines whose run folders do not survive: restore it, run the stages still missing (``study run``
resumes what is stored), and report again.

Reports written before ``report.json`` kept each store's facts (its ``stores`` entry) restore with the facts the
cells still tell: the settings and code of the newest provenance, the row label, the threshold. Their wall seconds
and prune records are gone; the restored meta says where it came from (``restored_from``).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from longreach.errors import LongreachError
from longreach.report.aggregate import row_label
from longreach.results import AXES, METRICS, STORE_NAME, Cell, Record, ResultsStore

CODE_KEYS = ("longreach_version", "git_sha", "source_hash")


def read_report(path: Path) -> dict[str, Any]:
    """A ``report.json`` (or the folder holding one), checked to hold what a restore needs."""
    path = Path(path)
    path = path / "report.json" if path.is_dir() else path
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LongreachError(f"cannot read {path} as a report.json: {error}") from None
    if not isinstance(document, dict):
        raise LongreachError(f"{path} is not a longreach report.json (it holds no JSON object)")
    missing = [key for key in ("runs", "provenance", "cells", "failed_cells") if key not in document]
    if missing:
        raise LongreachError(f"{path} is not a longreach report.json (it lacks {', '.join(missing)})")
    return document


def restore_stores(document: dict[str, Any], out: Path, source: str) -> list[Path]:
    """Write one store per run of the report ``document`` into ``out/RUN``; returns the store folders. Refuses a
    folder whose store already holds cells (a restore never mixes with results it did not write)."""
    names: list[str] = document["runs"]
    folders = [Path(out) / name for name in names]
    for folder in folders:
        if (folder / STORE_NAME).is_file():
            with ResultsStore(folder) as store:
                if store.count():
                    raise LongreachError(f"{folder} already holds results; restore into a new folder")
    cells = defaultdict(list)
    for cell in document["cells"]:
        cells[cell["run"]].append((cell, "ok"))
    for cell in document["failed_cells"]:
        cells[cell["run"]].append((cell, "error"))
    for name, folder in zip(names, folders, strict=True):
        provenance = _provenance_of_run(document, name, len(names) > 1)
        with ResultsStore(folder) as store:
            ids = {key: store.add_provenance(value) for key, value in provenance.items()}
            for cell, status in cells[name]:
                store.record(_record(cell, status), ids.get(cell.get("provenance_id")))
            store.set_meta(**_meta(document, name, [c for c, _ in cells[name]], provenance, source))
    return folders


def _provenance_of_run(document: dict[str, Any], name: str, merged: bool) -> dict[str, dict[str, Any]]:
    """The provenances the run's cells point to, keyed as the cells name them (``RUN:ID`` when runs were merged)."""
    if not merged:
        return dict(document["provenance"])
    return {key: value for key, value in document["provenance"].items() if key.rpartition(":")[0] == name}


def _record(cell: dict[str, Any], status: str) -> Record:
    return Record(
        cell=Cell(**{axis.name: cell[axis.name] for axis in AXES}),
        status=status,  # type: ignore[arg-type]
        metrics={m.name: cell[m.name] for m in METRICS if cell.get(m.name) is not None},
        prediction=cell.get("prediction"),
        answers=cell.get("answers", []),
        error=cell.get("error"),
        meta=cell.get("meta") or {},
        series=cell.get("series") or {},
    )


def _meta(
    document: dict[str, Any],
    name: str,
    cells: list[dict[str, Any]],
    provenance: dict[str, dict[str, Any]],
    source: str,
) -> dict[str, Any]:
    """The store's run-level facts: those the report kept, else what its cells and provenances tell."""
    meta = dict((document.get("stores") or {}).get(name) or {})
    if not meta:
        newest = max(provenance.values(), key=lambda p: p.get("created_at", ""), default={})
        meta = {
            "threshold": document.get("threshold", 0.85),
            "label": _label(cells),
            "settings": newest.get("settings", {}),
            "code": {key: newest.get(key) for key in CODE_KEYS},
        }
    if document.get("study"):
        meta["study"] = document["study"]
    meta["restored_from"] = {"report": source, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return meta


def _label(cells: list[dict[str, Any]]) -> str:
    """The label a run's rows carried: what ``row`` adds, in parentheses, to the unlabelled row of its cell."""
    for cell in cells:
        plain, row = row_label({**cell, "label": ""}), cell.get("row", "")
        if row.startswith(plain + " (") and row.endswith(")"):
            return row[len(plain) + 2 : -1]
    return ""
