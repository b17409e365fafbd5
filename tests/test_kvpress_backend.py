"""The ``kvpress`` backend as a peer row: a whole run goes through it, its refusals name the stack, its worker
survives a failing press and is stopped with the backend. Uses the kvpress venv of the oracle test (one build)."""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import run_config
from longreach.backends import ModelSettings, build_backend
from longreach.backends.kvpress import KvpressBackend, ensure_venv
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.runner import run_sweep
from longreach.runner.worker import request_of
from longreach.tasks import parse_task

VENV = Path(os.environ.get("LONGREACH_KVPRESS_VENV", Path.home() / ".cache" / "longreach" / "kvpress-venv"))
BACKEND = f"kvpress:venv={VENV}:threads=1"


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory) -> Path:
    """The tiny Llama and its tokenizer saved as an HF folder (kvpress loads the model from files)."""
    path = tmp_path_factory.mktemp("kvpress-backend") / "tiny-llama"
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def kvpress(folder) -> Iterator[KvpressBackend]:
    backend = build_backend(BACKEND, ModelSettings(str(folder), "fp32"))
    yield backend
    backend.close()


def _cells(out: Path) -> dict[tuple, dict]:
    report = json.loads((out / "report.json").read_text())
    return {(c["task"], c["method"], c["mode"], c["context_length"], c["index"]): c for c in report["cells"]}


def test_a_run_through_kvpress_answers_as_the_hf_backend(tmp_path, folder):
    """Both backends are greedy on the same fp32 weights and read the same ids in the same two parts, and the oracle
    test shows the same kept tokens and first logits within 1e-4; so the answers (hence the scores) are equal."""
    grid = dict(tasks=("niah_single_2",), lengths=(400,), methods=("none", "snapkv:compression_ratio=0.5"))
    grid.update(question_modes=("aware", "agnostic"), samples=2, model=str(folder))
    peer = run_sweep(run_config(tmp_path / "kvpress", backend=BACKEND, **grid), show_progress=False)
    ours = run_sweep(run_config(tmp_path / "hf", **grid), show_progress=False)
    assert (peer.ran, peer.failed, ours.failed) == (8, 0, 0)
    theirs, mine = _cells(tmp_path / "kvpress"), _cells(tmp_path / "hf")
    assert theirs.keys() == mine.keys()
    assert {c["backend"] for c in theirs.values()} == {"kvpress"}, "the backend is an axis of every cell"
    for key, cell in theirs.items():
        assert (cell["score"], cell["prediction"]) == (mine[key]["score"], mine[key]["prediction"]), key
        assert cell["realized_tokens"] == cell["context_length"] == 400
        assert cell["compressed_kv_bytes"] == mine[key]["compressed_kv_bytes"], "same kept tokens, same bytes"
    report = json.loads((tmp_path / "kvpress" / "report.json").read_text())
    (provenance,) = report["provenance"].values()
    assert provenance["kvpress_version"] == "0.5.5" and provenance["transformers_version"] == "5.2.0"


@pytest.mark.parametrize(
    "spec",
    ["snapkv:compression_ratio=0.5:window=16", "quantized", "snapkv:budget=64", "h2o:compression_ratio=0.5"],
)
def test_a_stack_kvpress_has_no_press_for_is_refused_by_name(kvpress, spec):
    stack = parse_stack(spec)
    with pytest.raises(LongreachError, match=f"kvpress cannot run '{stack.repr}'.*it runs none; snapkv"):
        kvpress.prepare([parse_stack("none"), stack], {"none": 400, stack.repr: 400}, {})


def test_a_press_that_raises_fails_its_request_only(kvpress, tiny):
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 400, 0.5, seed=0, index=0)
    agnostic = request_of(sample, "agnostic")
    with pytest.raises(RuntimeError, match="kvpress: RuntimeError"):  # PyramidKV's per-layer lengths (kvpress 0.5.5)
        kvpress.generate([agnostic], parse_stack("pyramid:compression_ratio=0.5"))
    (generation,) = kvpress.generate([agnostic], parse_stack("none"))
    assert generation.prompt_tokens == 400 and generation.new_tokens > 0 and generation.peak_rss_mb > 0


def test_the_worker_stops_with_its_backend(folder):
    backend = build_backend(BACKEND, ModelSettings(str(folder), "fp32"))
    process = backend.worker.process
    assert process.poll() is None
    del backend
    gc.collect()
    assert process.returncode is not None, "collected backend, reaped worker"


@pytest.mark.parametrize(
    ("model", "device", "message"),
    [("tiny-llama", "cpu", "kvpress loads the model from files"), (None, "cuda", "kvpress runs on the CPU only")],
)
def test_what_kvpress_cannot_load_is_refused_before_the_venv(folder, model, device, message):
    settings = ModelSettings(model or str(folder), "fp32", device)
    with pytest.raises(LongreachError, match=message):
        build_backend("kvpress:venv=/nonexistent/kvpress-venv", settings)
    assert not Path("/nonexistent/kvpress-venv").exists()


def test_a_request_reads_exactly_the_prompt(kvpress, tiny):
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 400, 0.5, seed=0, index=1)
    request = Request(sample.prompt, 4, sample.stop, sample.question_offset, "aware")
    (generation,) = kvpress.generate([request], parse_stack("knorm:compression_ratio=0.5"))
    assert generation.prompt_tokens == 400 and 0 < generation.new_tokens <= 4
    assert 0 < generation.compressed_kv_bytes < generation.kv_cache_bytes


def test_a_folder_the_backend_did_not_build_is_never_cleared(tmp_path):
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    with pytest.raises(LongreachError, match="is not a kvpress venv built here"):
        ensure_venv(tmp_path)
    assert (tmp_path / "pyvenv.cfg").is_file()
