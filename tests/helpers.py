"""Helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longreach.models.cpu import fast_bf16
from longreach.results import METRIC, Cell, Record
from longreach.runner import Grid, RunConfig

SMOLLM2_DTYPE = "bf16" if fast_bf16() else "fp32"
"""The dtype the real-model tests read SmolLM2 in: bf16 where this CPU runs it fast (AVX-512/AMX), fp32 on a CPU
without a fast bf16 path, where a bf16 prefill takes 3.5x as long (benchmarks/results/cpu_dtype_speed.md). Read here,
at import, before conftest makes every test see a fast-bf16 CPU. Checks of bf16 itself (DFloat11) stay in bf16."""

_GRID = ("tasks", "lengths", "methods", "depths", "samples", "question_modes")
_OPENAI = ("base_url", "api", "tokenizer", "concurrency", "timeout", "retries", "api_key")


def run_config(out: Path, **values: Any) -> RunConfig:
    """A RunConfig for tiny-llama from flat keyword values (grid fields, run fields, openai backend options)."""
    values.setdefault("model", "tiny-llama")
    values.setdefault("dtype", "fp32")
    values.setdefault("depths", (0.5,))
    grid = Grid(**{key: values.pop(key) for key in _GRID if key in values})
    openai = {key: values.pop(key) for key in _OPENAI if key in values}
    if openai:
        values["backend"] = "openai:" + ":".join(f"{key}={value}" for key, value in openai.items())
    return RunConfig(grid=grid, out=out, **values)


def record(cell: Cell, status: str = "ok", **values: Any) -> Record:
    """A Record from flat keyword values: declared metric names go into its metrics, the rest are its fields."""
    metrics = {key: values.pop(key) for key in list(values) if key in METRIC}
    return Record(cell, status, metrics, **values)


def masked_hidden_states(model: Any, batch: Any) -> Any:
    """The reference for a training row: the whole row in one forward pass under its (t, t) attention mask,
    ``batch`` a :class:`longreach.train.recipe.TrainBatch` -> hidden states (b, t, h)."""
    from longreach.train.recipe import attention_input

    mask = attention_input(model, batch.attention_mask)
    return model.model(batch.input_ids, position_ids=batch.position_ids, attention_mask=mask).last_hidden_state
