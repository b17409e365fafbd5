import dataclasses
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

from helpers import run_config
from longreach.backends.hf import HFBackend
from longreach.errors import LongreachError
from longreach.results.provenance import cpu_model
from longreach.runner import RunConfig, run_sweep


def config(tmp_path: Path, **overrides) -> RunConfig:
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
    return run_config(**values)


@pytest.fixture
def calls(monkeypatch):
    """Counts the hf backend's generate calls; requests whose prompt holds ``calls.fail_on`` raise (a simulated
    out-of-memory)."""
    counter = SimpleNamespace(count=0, fail_on=None)
    real = HFBackend.generate

    def generate(self, requests, stack):
        counter.count += 1
        if counter.fail_on and counter.fail_on in requests[0].prompt:
            raise RuntimeError("simulated out-of-memory")
        return real(self, requests, stack)

    monkeypatch.setattr(HFBackend, "generate", generate)
    return counter


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
    (provenance,) = report["provenance"].values()
    assert provenance["model"] == "tiny-llama" and provenance["native_context_length"] == 2048
    assert provenance["weights"] == "random tiny Llama in fp32" and provenance["source_hash"]
    assert provenance["cpu"] == cpu_model() and provenance["cpu_flags"]
    assert {c["provenance_id"] for c in report["cells"]} == set(report["provenance"]), "every cell points to it"
    assert set(report["effective_length"]["none"]) == {"passkey", "niah_single_1"}


def test_resume_runs_only_missing_cells(tmp_path, calls):
    run_sweep(config(tmp_path), show_progress=False)
    assert calls.count == 8
    summary = run_sweep(config(tmp_path, samples=2, resume=True), show_progress=False)
    assert (summary.planned, summary.skipped, summary.ran) == (16, 8, 8)
    assert calls.count == 16
    again = run_sweep(config(tmp_path, samples=2, resume=True), show_progress=False)
    assert again.ran == 0 and calls.count == 16


def test_existing_results_need_resume_and_the_same_settings(tmp_path):
    run_sweep(config(tmp_path, tasks=("passkey",), lengths=(400,), depths=(0.5,)), show_progress=False)
    with pytest.raises(LongreachError, match="already holds results; pass --resume"):
        run_sweep(config(tmp_path), show_progress=False)
    with pytest.raises(LongreachError, match=r"cannot resume .*: seed was 0, now 3\. Use the same"):
        run_sweep(config(tmp_path, seed=3, resume=True), show_progress=False)
    with pytest.raises(LongreachError, match="prompt was 'auto', now 'raw'"):
        run_sweep(config(tmp_path, prompt="raw", resume=True), show_progress=False)


def test_resuming_with_other_code_is_refused_unless_anyway_and_the_report_shows_the_mix(tmp_path, monkeypatch):
    import longreach.runner.run as run_module
    from longreach.results import provenance

    first = config(tmp_path, tasks=("passkey",), lengths=(400,), depths=(0.0, 1.0))
    run_sweep(first, show_progress=False)
    changed = {**provenance.code_version(), "source_hash": "0123456789abcdef", "git_sha": "feedbee"}
    monkeypatch.setattr(run_module, "code_version", lambda: changed)
    monkeypatch.setattr(provenance, "code_version", lambda: changed)
    more = dataclasses.replace(first, grid=dataclasses.replace(first.grid, samples=2), resume=True)
    with pytest.raises(LongreachError, match=r"the code changed: .* -> feedbee \(source 0123456789abcdef\)"):
        run_sweep(more, show_progress=False)
    summary = run_sweep(dataclasses.replace(more, resume_anyway=True), show_progress=False)
    assert summary.ran == 2
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    hashes = {report["provenance"][c["provenance_id"]]["source_hash"] for c in report["cells"]}
    assert len(hashes) == 2 and "0123456789abcdef" in hashes, "each cell keeps the provenance it ran under"
    assert "ran under 2 code versions" in (tmp_path / "run" / "report.md").read_text()


def test_a_failing_cell_is_stored_and_retried_on_resume(tmp_path, calls):
    calls.fail_on = "special magic"  # every niah_single_1 cell
    summary = run_sweep(config(tmp_path), show_progress=False)
    assert summary.failed == 4
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert len(report["failed_cells"]) == 4 and "simulated out-of-memory" in report["failed_cells"][0]["error"]
    assert "Failed cells (4" in (tmp_path / "run" / "report.md").read_text()
    calls.fail_on = None
    summary = run_sweep(config(tmp_path, resume=True), show_progress=False)
    assert (summary.ran, summary.failed) == (4, 0)


def test_bad_specs_fail_before_any_model_loads(tmp_path, monkeypatch):
    import longreach.backends.hf as hf

    def loader(*args):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(hf, "load_model", loader)
    with pytest.raises(LongreachError, match="unknown method 'nonne'"):
        run_sweep(config(tmp_path, methods=("nonne",)))
    with pytest.raises(LongreachError, match="unknown task 'paskey': did you mean 'passkey'"):
        run_sweep(config(tmp_path, tasks=("paskey",)))
    with pytest.raises(LongreachError, match="passkey at 50 tokens: context_length 50 is smaller"):
        run_sweep(config(tmp_path, lengths=(50, 400)))
    with pytest.raises(LongreachError, match="unknown backend 'hff'"):
        run_sweep(config(tmp_path, backend="hff"))
    with pytest.raises(LongreachError, match="unknown executor 'lokal'"):
        run_sweep(config(tmp_path, executor="lokal"))
    with pytest.raises(LongreachError, match="shard must be i/n with 0 <= i < n"):
        run_sweep(config(tmp_path, executor="local:shard=4/4"))
    with pytest.raises(LongreachError, match="unknown prompt format 'chatty'"):
        run_sweep(config(tmp_path, prompt="chatty"))
    assert not (tmp_path / "run" / "results.sqlite").exists()


def test_shards_fill_one_store_together(tmp_path, calls):
    for shard in ("0/3", "1/3", "2/3"):
        summary = run_sweep(config(tmp_path, executor=f"local:shard={shard}", resume=True), show_progress=False)
        assert summary.planned in (2, 3)
    assert calls.count == 8
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    coordinates = {(c["task"], c["context_length"], c["depth"]) for c in report["cells"]}
    assert len(report["cells"]) == 8 and len(coordinates) == 8


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
    import longreach.backends.hf as hf

    monkeypatch.setattr(hf.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000))
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
    import longreach.backends.hf as hf

    monkeypatch.setattr(hf.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000, total=2**34))
    summary = run_sweep(
        config(
            tmp_path, tasks=("passkey",), lengths=(3000,), depths=(0.5,), methods=("infiniretri:chunk=512:topk=50",)
        ),
        show_progress=False,
    )
    assert summary.ran == 1 and summary.failed == 0


def test_the_cpu_is_named_by_its_model_name(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
    assert cpu_model(str(cpuinfo)) == "AMD EPYC"
    assert cpu_model(str(tmp_path / "absent")), "elsewhere: what platform knows, never empty"
