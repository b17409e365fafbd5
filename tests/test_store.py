import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

from helpers import record
from longreach.results import Cell, ResultsStore


def test_record_and_read_back(tmp_path):
    cell = Cell("passkey", "none", 1024, 0.5, 0)
    with ResultsStore(tmp_path) as store:
        store.record(
            record(
                cell,
                "ok",
                score=1.0,
                seconds=1.5,
                prefill_seconds=1.0,
                peak_rss_mb=900.0,
                kv_cache_bytes=123,
                realized_tokens=1024,
                prediction=" 12345.",
                answers=["12345"],
            )
        )
        store.record(record(Cell("jsonl:x", "none", 1024, None, 3), "error", error="ValueError: bad"))
        assert store.finished_keys() == {cell.key}
        rows = store.rows()
    failed = next(r for r in rows if r["status"] == "error")
    assert failed["depth"] is None and failed["error"] == "ValueError: bad"
    ok = next(r for r in rows if r["status"] == "ok")
    assert ok["answers"] == ["12345"] and ok["index"] == 0 and ok["kv_cache_bytes"] == 123


def test_a_retried_cell_replaces_its_error(tmp_path):
    cell = Cell("passkey", "none", 1024, 0.5, 0)
    with ResultsStore(tmp_path) as store:
        store.record(record(cell, "error", error="boom"))
        store.record(record(cell, "ok", score=0.0, seconds=1, prefill_seconds=1, peak_rss_mb=1, kv_cache_bytes=1))
        assert store.count() == 1 and store.finished_keys() == {cell.key}


def test_kill_at_any_moment_leaves_a_consistent_store(tmp_path):
    """A writer is SIGKILLed mid-stream; every committed row survives and the file passes integrity_check."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from longreach.results import Cell, Record, ResultsStore
        store = ResultsStore(Path({str(tmp_path)!r}))
        for i in range(100000):
            store.record(Record(Cell("t", "none", 1, 0.0, i), "ok", {{"score": 1.0}}, prediction="x" * 2000))
    """)
    writer = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.3)
        if (tmp_path / "results.sqlite").exists() and _count(tmp_path) > 20:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    db = sqlite3.connect(tmp_path / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    indices = [row[0] for row in db.execute("SELECT idx FROM cells ORDER BY idx")]
    assert len(indices) > 20
    assert indices == list(range(len(indices))), "rows are committed in order, none half-written"


def _count(folder) -> int:
    try:
        return sqlite3.connect(folder / "results.sqlite", timeout=5).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
