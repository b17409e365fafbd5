import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from longreach.backends import HFBackend
from longreach.errors import LongreachError
from longreach.runner import SweepConfig, run_sweep


def config(tmp_path: Path, **overrides) -> SweepConfig:
    values = dict(
        model="tiny-llama",
        tasks=("passkey", "niah_single_1"),
        lengths=(400, 600),
        out=tmp_path / "run",
        depths=(0.0, 1.0),
        samples=1,
        dtype="fp32",
    )
    values.update(overrides)
    return SweepConfig(**values)


class CountingBackend(HFBackend):
    calls = 0
    fail_on: str | None = None

    def generate(self, requests, stack):
        CountingBackend.calls += 1
        if CountingBackend.fail_on and CountingBackend.fail_on in requests[0].prompt:
            raise RuntimeError("simulated out-of-memory")
        return super().generate(requests, stack)


@pytest.fixture(autouse=True)
def _reset_counter():
    CountingBackend.calls, CountingBackend.fail_on = 0, None


def test_sweep_writes_every_cell_and_the_report(tmp_path):
    summary = run_sweep(config(tmp_path), show_progress=False)
    assert (summary.planned, summary.ran, summary.failed) == (8, 8, 0)
    folder = tmp_path / "run"
    for name in (
        "results.sqlite",
        "report.json",
        "report.md",
        "report.html",
        "curve_passkey.png",
        "heatmap_passkey__none.png",
        "heatmap_niah_single_1__none.png",
    ):
        assert (folder / name).is_file(), name
    report = json.loads((folder / "report.json").read_text())
    assert len(report["cells"]) == 8
    cell = report["cells"][0]
    for key in (
        "task",
        "method",
        "context_length",
        "depth",
        "index",
        "score",
        "seconds",
        "prefill_seconds",
        "peak_rss_mb",
        "kv_cache_bytes",
        "realized_tokens",
    ):
        assert key in cell
    assert all(c["realized_tokens"] == c["context_length"] for c in report["cells"])
    assert report["provenance"]["model"] == "tiny-llama" and report["provenance"]["native_context_length"] == 2048
    assert set(report["effective_length"]["none"]) == {"passkey", "niah_single_1"}


def test_resume_runs_only_missing_cells(tmp_path):
    run_sweep(config(tmp_path), show_progress=False, backend_factory=CountingBackend)
    assert CountingBackend.calls == 8
    summary = run_sweep(config(tmp_path, samples=2, resume=True), show_progress=False, backend_factory=CountingBackend)
    assert (summary.planned, summary.skipped, summary.ran) == (16, 8, 8)
    assert CountingBackend.calls == 16
    again = run_sweep(config(tmp_path, samples=2, resume=True), show_progress=False, backend_factory=CountingBackend)
    assert again.ran == 0 and CountingBackend.calls == 16


def test_existing_results_need_resume_and_the_same_identity(tmp_path):
    run_sweep(config(tmp_path, tasks=("passkey",), lengths=(400,), depths=(0.5,)), show_progress=False)
    with pytest.raises(LongreachError, match="already holds results; pass --resume"):
        run_sweep(config(tmp_path), show_progress=False)
    with pytest.raises(LongreachError, match="it was run with seed=0, not 3"):
        run_sweep(config(tmp_path, seed=3, resume=True), show_progress=False)


def test_a_failing_cell_is_stored_and_retried_on_resume(tmp_path):
    CountingBackend.fail_on = "special magic"  # every niah_single_1 cell
    summary = run_sweep(config(tmp_path), show_progress=False, backend_factory=CountingBackend)
    assert summary.failed == 4
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert len(report["failed_cells"]) == 4 and "simulated out-of-memory" in report["failed_cells"][0]["error"]
    assert "Failed cells (4" in (tmp_path / "run" / "report.md").read_text()
    CountingBackend.fail_on = None
    summary = run_sweep(config(tmp_path, resume=True), show_progress=False, backend_factory=CountingBackend)
    assert (summary.ran, summary.failed) == (4, 0)


def test_bad_specs_fail_before_any_model_loads(tmp_path):
    def loader(*args):
        raise AssertionError("the model must not load")

    with pytest.raises(LongreachError, match="unknown method 'nonne'"):
        run_sweep(config(tmp_path, methods=("nonne",)), loader=loader)
    with pytest.raises(LongreachError, match="unknown task 'paskey': did you mean 'passkey'"):
        run_sweep(config(tmp_path, tasks=("paskey",)), loader=loader)
    with pytest.raises(LongreachError, match="passkey at 50 tokens: context_length 50 is smaller"):
        run_sweep(config(tmp_path, lengths=(50, 400)), loader=loader)
    assert not (tmp_path / "run" / "results.sqlite").exists()


def test_lengths_past_an_absolute_position_table_are_refused(tmp_path, tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tiny.tokenizer), n_positions=512, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    with pytest.raises(LongreachError, match=r"absolute positions up to 512 tokens; 600 tokens cannot run"):
        run_sweep(config(tmp_path, model=str(folder), tasks=("passkey",)), show_progress=False)


def test_lengths_beyond_memory_are_refused(tmp_path, monkeypatch):
    import longreach.runner.sweep as sweep

    monkeypatch.setattr(sweep.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000))
    with pytest.raises(LongreachError, match=r"600 tokens need .* GiB of KV cache .* is available"):
        run_sweep(config(tmp_path), show_progress=False)


def test_lengths_beyond_the_native_window_run_and_are_marked(tmp_path):
    run_sweep(config(tmp_path, tasks=("passkey",), lengths=(1024, 2560), depths=(0.5,)), show_progress=False)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    marks = {c["context_length"]: c["beyond_native_window"] for c in report["cells"]}
    assert marks == {1024: False, 2560: True}
    assert "2560*" in (tmp_path / "run" / "report.md").read_text()


def test_a_sweep_killed_by_a_signal_resumes_without_loss(tmp_path):
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "longreach.cli",
        "eval",
        "--model",
        "tiny-llama",
        "--task",
        "passkey,niah_single_2",
        "--lengths",
        "1k,1536,2k",
        "--depths",
        "0,0.25,0.5,0.75,1",
        "--samples",
        "4",
        "--out",
        str(out),
        "--dtype",
        "fp32",
        "--quiet",
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline and _rows(out) < 5:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = _rows(out)
    assert 5 <= done_before < 120, "killed mid-sweep"
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    resumed = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" in resumed.stdout
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM cells WHERE status='ok'").fetchone() == (120, 120)


def _rows(folder: Path) -> int:
    try:
        db = sqlite3.connect(folder / "results.sqlite", timeout=5)
        return db.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_bounded_reader_is_not_refused_for_lengths_beyond_memory(tmp_path, monkeypatch):
    import longreach.runner.sweep as sweep

    monkeypatch.setattr(sweep.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000, total=2**34))
    summary = run_sweep(
        config(
            tmp_path, tasks=("passkey",), lengths=(3000,), depths=(0.5,), methods=("infiniretri:chunk=512:topk=50",)
        ),
        show_progress=False,
    )
    assert summary.ran == 1 and summary.failed == 0
