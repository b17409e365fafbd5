"""``--executor ray`` on a local Ray cluster: the same results as the local executor, each worker loading
the model once, every result written by the driver into the one store."""

import json

import pytest

from helpers import run_config
from longreach.runner import RunConfig, run_sweep

pytestmark = pytest.mark.slow


def _config(tmp_path, name, **overrides) -> RunConfig:
    values = dict(
        model="tiny-llama",
        tasks=("passkey", "nt_single", "cwe"),
        lengths=(600, 900),
        out=tmp_path / name,
        depths=(0.0, 1.0),
        samples=2,
        dtype="fp32",
    )
    values.update(overrides)
    return run_config(**values)


def _cells(folder):
    report = json.loads((folder / "report.json").read_text())
    return {
        (c["task"], c["context_length"], c["depth"], c["index"]): (c["score"], c["prediction"]) for c in report["cells"]
    }


def test_ray_cells_match_the_local_executor(tmp_path):
    """The same worker runs in each actor: same answers, and --reuse-prefix reaches the actors' engines."""
    local = run_sweep(_config(tmp_path, "local"), show_progress=False)
    distributed = run_sweep(_config(tmp_path, "ray", executor="ray:workers=2", reuse_prefix=True), show_progress=False)
    assert distributed.planned == local.planned == 20 and distributed.failed == 0
    assert _cells(tmp_path / "ray") == _cells(tmp_path / "local")
    import sqlite3

    db = sqlite3.connect(tmp_path / "ray" / "results.sqlite")
    metas = [json.loads(m) for (m,) in db.execute("SELECT meta FROM cells WHERE status = 'ok'")]
    assert len(metas) == 20
    reused = [r for (r,) in db.execute("SELECT reused_tokens FROM cells WHERE status = 'ok'")]
    assert sum(r > 0 for r in reused) >= 4, "the actors' engines continued kept reads (--reuse-prefix)"
    assert len({m["worker"] for m in metas}) == 2, "both actors ran cells"
    assert {m["workers_built_here"] for m in metas} == {1}, "each actor built one worker: one model load"
    (value,) = {v for (v,) in db.execute("SELECT value FROM provenance")}
    provenance = json.loads(value)
    assert provenance["executor"].startswith("ray") and provenance["model"] == "tiny-llama"


def test_ray_resume_runs_only_the_missing_cells(tmp_path):
    run_sweep(_config(tmp_path, "run", executor="ray:workers=2", samples=1), show_progress=False)
    again = run_sweep(_config(tmp_path, "run", executor="ray:workers=2", resume=True), show_progress=False)
    assert (again.planned, again.skipped, again.ran, again.failed) == (20, 10, 10, 0)
