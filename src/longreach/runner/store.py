"""The results store: one SQLite file per output folder, one row per finished cell, committed at once.

Each cell is written in its own transaction, so a run killed at any moment loses at most the cell in
flight and SQLite's journal keeps the file consistent. ``--resume`` skips cells whose status is ``ok``.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from longreach.errors import LongreachError

STORE_NAME = "results.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    method TEXT NOT NULL,
    context_length INTEGER NOT NULL,
    depth REAL,
    idx INTEGER NOT NULL,
    mode TEXT NOT NULL DEFAULT 'aware',
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    score REAL,
    seconds REAL,
    prefill_seconds REAL,
    peak_rss_mb REAL,
    kv_cache_bytes INTEGER,
    realized_tokens INTEGER,
    realized_depth REAL,
    new_tokens INTEGER,
    prediction TEXT,
    answers TEXT,
    error TEXT,
    meta TEXT,
    finished_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
"""


@dataclass(frozen=True, order=True)
class Cell:
    """The coordinates of one measurement. ``depth`` is None for tasks without depth (jsonl). ``mode`` is the
    question mode (``aware``: the question is read before a cache method compresses; ``agnostic``: after)."""

    task: str
    method: str
    context_length: int
    depth: float | None
    index: int
    mode: str = "aware"

    @property
    def key(self) -> str:
        depth = "-" if self.depth is None else repr(self.depth)
        mode = "" if self.mode == "aware" else f"|{self.mode}"  # aware keys stay as stores before modes had them
        return f"{self.task}|{self.method}|{self.context_length}|{depth}|{self.index}{mode}"


@dataclass(frozen=True)
class CellResult:
    """A finished cell: its coordinates, score and costs (status ``error`` keeps the message instead)."""

    cell: Cell
    status: str
    score: float | None = None
    seconds: float | None = None
    prefill_seconds: float | None = None
    peak_rss_mb: float | None = None
    kv_cache_bytes: int | None = None
    realized_tokens: int | None = None
    realized_depth: float | None = None
    new_tokens: int | None = None
    prediction: str | None = None
    answers: list[str] = field(default_factory=list)
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class ResultsStore:
    """``results.sqlite`` in an output folder."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / STORE_NAME
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)
        columns = {row["name"] for row in self._db.execute("PRAGMA table_info(cells)")}
        if "mode" not in columns:  # a store written before question modes existed: all its cells were aware
            self._db.execute("ALTER TABLE cells ADD COLUMN mode TEXT NOT NULL DEFAULT 'aware'")

    @classmethod
    def existing(cls, folder: Path) -> ResultsStore:
        """Open a store that must already exist (for ``longreach report``)."""
        if not (folder / STORE_NAME).is_file():
            raise LongreachError(f"{folder} holds no {STORE_NAME}; run `longreach eval --out {folder}` first")
        return cls(folder)

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

    def finished_keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM cells WHERE status = 'ok'")}

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]

    def record(self, result: CellResult) -> None:
        """Write one cell and commit before returning."""
        cell = result.cell
        row = {
            "key": cell.key,
            "task": cell.task,
            "method": cell.method,
            "context_length": cell.context_length,
            "depth": cell.depth,
            "idx": cell.index,
            "mode": cell.mode,
        }
        row.update({f.name: getattr(result, f.name) for f in fields(result) if f.name != "cell"})
        row["answers"] = json.dumps(row["answers"])
        row["meta"] = json.dumps(row["meta"])
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(f"INSERT OR REPLACE INTO cells ({columns}) VALUES ({marks})", tuple(row.values()))

    def rows(self) -> list[dict[str, Any]]:
        """Every stored cell as a dict (answers and meta decoded), in coordinate order."""
        rows = []
        for row in self._db.execute("SELECT * FROM cells ORDER BY task, method, mode, context_length, depth, idx"):
            item = dict(row)
            item["index"] = item.pop("idx")
            item["answers"] = json.loads(item["answers"])
            item["meta"] = json.loads(item["meta"])
            rows.append(item)
        return rows
