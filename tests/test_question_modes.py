"""Question-aware vs question-agnostic evaluation: the backend's two-part read, reuse of one read by several
methods and questions, and the mode as part of a cell's identity in plans, stores and reports."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest

import longreach.cli as cli
from helpers import record, run_config
from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.results import Cell, ResultsStore
from longreach.runner import RunSummary, run_sweep
from longreach.runner.plan import Plan
from longreach.tasks import parse_task


@pytest.fixture(scope="module")
def samples(tiny):
    task = parse_task("niah_multikey_1").task
    return [task.generate(tiny.tokenizer, 700, depth, seed=0, index=0) for depth in (0.3, 0.8)]


def request(sample, mode="aware", new=12):
    return Request(sample.prompt, new, (), len(sample.context), mode)


def test_without_a_cache_method_both_modes_read_the_same_tokens(tiny, samples):
    aware = Engine(tiny).generate(request(samples[0]), parse_stack("none"))
    agnostic = Engine(tiny).generate(request(samples[0], "agnostic"), parse_stack("none"))
    assert agnostic.text == aware.text and agnostic.kv_cache_bytes == aware.kv_cache_bytes
    context = tokens.count(tiny.tokenizer, samples[0].context)
    assert agnostic.compressed_kv_bytes == tiny.kv_bytes_per_token * context  # the context alone, then the question
    assert aware.compressed_kv_bytes == tiny.kv_bytes_per_token * aware.prompt_tokens


def test_agnostic_compression_happens_before_the_question(tiny, samples):
    """Agnostic: the cache method sees only the context, so its kept tokens cannot depend on the question."""
    first = request(samples[0], "agnostic")
    other = Request(
        samples[0].context + "\nWhat is the pass key? The pass key is", 12, (), len(samples[0].context), "agnostic"
    )
    stack = parse_stack("snapkv:compression_ratio=0.5:window=16")
    one = Engine(tiny).generate(first, stack)
    two = Engine(tiny).generate(other, stack)
    assert one.compressed_kv_bytes == two.compressed_kv_bytes
    context = tokens.count(tiny.tokenizer, samples[0].context)
    assert one.compressed_kv_bytes == tiny.kv_bytes_per_token * int(context * 0.5)


def test_agnostic_needs_the_question_offset(tiny, samples):
    with pytest.raises(LongreachError, match="question's offset"):
        Engine(tiny).generate(Request(samples[0].prompt, 4, mode="agnostic"), parse_stack("none"))
    with pytest.raises(LongreachError, match="non-empty context and question"):
        Engine(tiny).generate(Request(samples[0].prompt, 4, (), 0, "agnostic"), parse_stack("none"))


@pytest.mark.parametrize("mode", ["aware", "agnostic"])
def test_methods_compressing_one_shared_read_answer_as_if_alone(tiny, samples, mode):
    """reuse_prefix: the cache methods after the first compress a copy of its uncompressed read."""
    specs = [
        "snapkv:compression_ratio=0.5:window=16",
        "h2o:compression_ratio=0.75",
        "knorm:budget=200",
        "quantized:bits=4",
        "none",
    ]
    sharing = Engine(tiny, reuse_prefix=True)
    for sample in samples:
        for index, spec in enumerate(specs):
            alone = Engine(tiny).generate(request(sample, mode), parse_stack(spec))
            shared = sharing.generate(request(sample, mode), parse_stack(spec))
            assert (shared.text, shared.compressed_kv_bytes, shared.kv_cache_bytes) == (
                alone.text,
                alone.compressed_kv_bytes,
                alone.kv_cache_bytes,
            ), spec
            read = shared.prompt_tokens - 1 if mode == "aware" else tokens.count(tiny.tokenizer, sample.context)
            assert shared.reused_tokens == (0 if index == 0 else read), spec


def test_several_questions_on_one_compressed_context(tiny, samples):
    """Question-agnostic: later questions about the same context reuse its read and compress it the same way."""
    backend = Engine(tiny, reuse_prefix=True)
    stack = parse_stack("streaming:compression_ratio=0.5")
    context = samples[0].context
    questions = ["\nWhat is the first key?", "\nWhat is the second key? It is"]
    results = [backend.generate(Request(context + q, 6, (), len(context), "agnostic"), stack) for q in questions]
    n = tokens.count(tiny.tokenizer, context)
    assert [r.reused_tokens for r in results] == [0, n]
    assert results[0].compressed_kv_bytes == results[1].compressed_kv_bytes == tiny.kv_bytes_per_token * (n // 2)


def test_the_mode_is_part_of_a_cells_identity():
    aware = Cell("passkey", "snapkv:compression_ratio=0.5", 4096, 0.5, 0)
    agnostic = Cell("passkey", "snapkv:compression_ratio=0.5", 4096, 0.5, 0, "agnostic")
    assert aware.key == "passkey|snapkv:compression_ratio=0.5|4096|0.5|0"  # as stored before modes existed
    assert agnostic.key == aware.key + "|agnostic"


def test_plan_spans_the_modes_and_interleaves_methods_within_a_mode(tmp_path):
    config = run_config(
        model="tiny-llama",
        tasks=("passkey",),
        lengths=(512,),
        out=tmp_path,
        methods=("knorm:compression_ratio=0.5", "none"),
        depths=(0.5,),
        samples=2,
        interleave=True,
        question_modes=("aware", "agnostic"),
    )
    cells = Plan.from_config(config).cells("raw")
    assert [(c.index, c.mode, c.method) for c in cells] == [
        (i, mode, m) for i in (0, 1) for mode in ("aware", "agnostic") for m in ("knorm:compression_ratio=0.5", "none")
    ]
    with pytest.raises(LongreachError, match="question mode"):
        Plan.from_config(
            run_config(model="tiny-llama", tasks=("passkey",), lengths=(512,), out=tmp_path, question_modes=("both",))
        )


def test_both_modes_share_an_output_folder_and_show_in_the_report(tmp_path):
    config = run_config(
        model="tiny-llama",
        tasks=("passkey",),
        lengths=(400,),
        out=tmp_path / "run",
        methods=("knorm:compression_ratio=0.5",),
        depths=(0.5,),
        dtype="fp32",
        question_modes=("aware", "agnostic"),
    )
    summary = run_sweep(config, show_progress=False)
    assert (summary.ran, summary.failed) == (2, 0)
    with ResultsStore(tmp_path / "run") as store:
        rows = store.rows()
    assert sorted(r["mode"] for r in rows) == ["agnostic", "aware"]
    assert all(r["compressed_kv_bytes"] > 0 and r["decode_steps"] >= 0 for r in rows), "declared metrics, not meta"
    report = (tmp_path / "run" / "report.md").read_text()
    assert "knorm:compression_ratio=0.5 [question-agnostic]" in report
    document = json.loads((tmp_path / "run" / "report.json").read_text())
    assert sorted(c["mode"] for c in document["cells"]) == ["agnostic", "aware"]
    resumed = run_sweep(dataclasses.replace(config, resume=True), show_progress=False)
    assert resumed.skipped == 2 and resumed.ran == 0


def test_a_store_from_before_modes_gains_the_column(tmp_path):
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.executescript(
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE cells (key TEXT PRIMARY KEY, task TEXT NOT NULL, method TEXT NOT NULL,
        context_length INTEGER NOT NULL, depth REAL, idx INTEGER NOT NULL, status TEXT NOT NULL, score REAL,
        seconds REAL, prefill_seconds REAL, peak_rss_mb REAL, kv_cache_bytes INTEGER, realized_tokens INTEGER,
        realized_depth REAL, new_tokens INTEGER, prediction TEXT, answers TEXT, error TEXT, meta TEXT,
        finished_at TEXT NOT NULL DEFAULT 'x');
        INSERT INTO cells (key, task, method, context_length, depth, idx, status, score, answers, meta)
        VALUES ('passkey|none|512|0.5|0', 'passkey', 'none', 512, 0.5, 0, 'ok', 1.0, '[]', '{}');"""
    )
    db.close()
    with ResultsStore(tmp_path) as store:
        assert store.rows()[0]["mode"] == "aware"
        store.record(record(Cell("passkey", "none", 512, 0.5, 0, "agnostic"), "ok", score=0.0))
        assert store.finished_keys() == {"passkey|none|512|0.5|0", "passkey|none|512|0.5|0|agnostic"}


def test_cli_passes_the_question_modes(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_run_sweep(config, show_progress):
        seen["config"] = config
        (tmp_path / "report.md").write_text("# r\n## Figures\n")
        return RunSummary(tmp_path, 1, 0, 1, 0)

    monkeypatch.setattr(cli, "run_sweep", fake_run_sweep)
    argv = [
        "eval",
        "--model",
        "tiny-llama",
        "--task",
        "passkey",
        "--lengths",
        "1k",
        "--out",
        str(tmp_path),
        "--question-mode",
        "aware,agnostic",
        "--quiet",
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 0 and seen["config"].grid.question_modes == ("aware", "agnostic")
