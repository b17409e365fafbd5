"""The results store: one SQLite file per output folder, one row per finished cell, committed at once.

The ``cells`` table's columns come from the declared schema (:data:`~longreach.results.schema.AXES` and
:data:`~longreach.results.schema.METRICS`); ``provenance`` holds each distinct provenance once and every cell points
to the one it ran under; ``meta`` keeps run-level facts (the run's settings, the report threshold, calibrations).
Each cell is written in its own transaction, so a run killed at any moment loses at most the cell in flight and
SQLite's journal keeps the file consistent. Stores written before the schema grew are upgraded on open (new
columns added, metrics moved out of the old ``meta`` blob, the run-level provenance attached to its cells).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from longreach.errors import LongreachError
from longreach.results.provenance import fingerprint
from longreach.results.schema import AXES, METRICS, Cell, Record

STORE_NAME = "results.sqlite"
_FIELDS = (
    ("status", "TEXT NOT NULL CHECK (status IN ('ok', 'error'))"),
    ("prediction", "TEXT"),
    ("answers", "TEXT"),
    ("error", "TEXT"),
    ("meta", "TEXT"),
    ("series", "TEXT"),
    ("provenance_id", "INTEGER REFERENCES provenance (id)"),
    ("finished_at", "TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))"),
)
_COLUMNS = (
    [("key", "TEXT PRIMARY KEY")]
    + [(axis.sql_column, axis.sql) for axis in AXES]
    + [(metric.name, metric.sql) for metric in METRICS]
    + list(_FIELDS)
)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (id INTEGER PRIMARY KEY, fingerprint TEXT UNIQUE NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells ({", ".join(f"{name} {sql}" for name, sql in _COLUMNS)});
"""
_MOVED_FROM_META = ("decode_seconds", "decode_steps", "compressed_kv_bytes", "peak_gpu_mb", "reused_tokens")


class ResultsStore:
    """``results.sqlite`` in an output folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / STORE_NAME
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)
        self._upgrade()

    @classmethod
    def existing(cls, folder: Path) -> ResultsStore:
        """Open a store that must already exist (for ``longreach report``)."""
        if not (Path(folder) / STORE_NAME).is_file():
            raise LongreachError(f"{folder} holds no {STORE_NAME}; run `longreach eval --out {folder}` first")
        return cls(Path(folder))

    def _upgrade(self) -> None:
        """Bring a store written by an older longreach to the declared schema (idempotent)."""
        present = {row["name"] for row in self._db.execute("PRAGMA table_info(cells)")}
        missing = [(name, sql) for name, sql in _COLUMNS if name not in present]
        if not missing:
            return
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for name, sql in missing:
                plain = sql.replace(" REFERENCES provenance (id)", "")
                self._db.execute(f"ALTER TABLE cells ADD COLUMN {name} {plain}")
            for name in _MOVED_FROM_META:
                if name in dict(missing):
                    self._db.execute(f"UPDATE cells SET {name} = json_extract(meta, '$.{name}') WHERE meta IS NOT NULL")
            if "decode_tok_s" in dict(missing):
                self._db.execute("UPDATE cells SET decode_tok_s = decode_steps / decode_seconds WHERE decode_seconds")
            if "random_baseline" in dict(missing):
                self._db.execute("UPDATE cells SET random_baseline = json_extract(meta, '$.random_baseline')")
            old = self._db.execute("SELECT value FROM meta WHERE key = 'provenance'").fetchone()
            if old is not None and "provenance_id" in dict(missing):
                identifier = self._provenance_id(json.loads(old["value"]))
                self._db.execute("UPDATE cells SET provenance_id = ?", (identifier,))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def meta(self) -> dict[str, Any]:
        return {row["key"]: json.loads(row["value"]) for row in self._db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values: Any) -> None:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for key, value in values.items():
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def _provenance_id(self, provenance: dict[str, Any]) -> int:
        mark = fingerprint(provenance)
        self._db.execute(
            "INSERT OR IGNORE INTO provenance (fingerprint, value) VALUES (?, ?)", (mark, json.dumps(provenance))
        )
        return self._db.execute("SELECT id FROM provenance WHERE fingerprint = ?", (mark,)).fetchone()[0]

    def add_provenance(self, provenance: dict[str, Any]) -> int:
        """The id of ``provenance`` (stored once per distinct fingerprint)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            return self._provenance_id(provenance)

    def provenances(self) -> dict[int, dict[str, Any]]:
        """Every provenance the store holds, by id."""
        return {row["id"]: json.loads(row["value"]) for row in self._db.execute("SELECT id, value FROM provenance")}

    def finished_keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM cells WHERE status = 'ok'")}

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]

    def record(self, record: Record, provenance_id: int | None = None) -> None:
        """Write one cell and commit before returning."""
        row: dict[str, Any] = {"key": record.cell.key}
        row.update({axis.sql_column: getattr(record.cell, axis.name) for axis in AXES})
        row.update({metric.name: record.metrics.get(metric.name) for metric in METRICS})
        row.update(
            status=record.status,
            prediction=record.prediction,
            answers=json.dumps(record.answers),
            error=record.error,
            meta=json.dumps(record.meta),
            series=json.dumps(record.series) if record.series else None,
            provenance_id=provenance_id,
        )
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(f"INSERT OR REPLACE INTO cells ({columns}) VALUES ({marks})", tuple(row.values()))

    def rows(self) -> list[dict[str, Any]]:
        """Every stored cell as a dict keyed by axis and metric names (answers and meta decoded), in order."""
        rows = []
        query = "SELECT * FROM cells ORDER BY task, method, backend, prompt, mode, context_length, depth, idx"
        for row in self._db.execute(query):
            item = dict(row)
            item["index"] = item.pop("idx")
            item["answers"] = json.loads(item["answers"] or "[]")
            item["meta"] = json.loads(item["meta"] or "{}")
            item["series"] = json.loads(item["series"] or "{}")
            rows.append(item)
        return rows


def cell_of(row: dict[str, Any]) -> Cell:
    """The :class:`Cell` of a stored row."""
    return Cell(**{axis.name: row[axis.name] for axis in AXES})
