"""What runs cells, wherever an executor puts it: a :class:`Worker` builds its backend through the one factory,
prepares the run's stacks (capacity check, ``auto`` calibration), resolves the prompt format, and turns each cell
into a :class:`~longreach.results.Record` (generate the sample, run it, score it)."""

from __future__ import annotations

import math
import os
import socket
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, cast

from longreach.backends import build_backend
from longreach.backends.openai import BackendUnavailable
from longreach.errors import LongreachError
from longreach.generation import Generation, Losses, LossRequest, Request
from longreach.methods import MethodStack
from longreach.prompts import PromptFormat, resolve_format
from longreach.results import Cell, Record
from longreach.results.provenance import current
from longreach.runner.plan import Plan, RunConfig
from longreach.tasks import Sample, Task
from longreach.tasks.text import LongText


@dataclass(frozen=True)
class Job:
    """What every worker of a run gets: the run's config, the longest length each stack will read (stack spec ->
    tokens), and the ``auto`` stacks already calibrated by an earlier part of the run (spec -> resolved spec; a
    resumed run keeps its choice)."""

    config: RunConfig
    longest: dict[str, int]
    calibrated: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    """What a worker reports once ready: its provenance and the calibrations its preparation made."""

    provenance: dict[str, Any]
    calibration: dict[str, Any]


class Worker:
    """One backend (one model load) and the run's parsed tasks and prepared stacks. ``built`` counts the workers
    this process has made (a Ray actor makes one; each cell records it with the worker's name)."""

    built = 0

    def __init__(self, job: Job) -> None:
        Worker.built += 1
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        config = job.config
        plan = Plan.from_config(config)
        self.config = config
        self.tasks = {parsed.spec: parsed.task for parsed in plan.tasks}
        self.backend = build_backend(config.backend, config.model_settings())
        if any(task.measures == "loss" for task in self.tasks.values()) and not hasattr(self.backend, "losses"):
            raise LongreachError(
                f"the {plan.backend} backend cannot give token losses (perplexity); run it with --backend hf"
            )
        preparation = self.backend.prepare(plan.stacks, job.longest, job.calibrated)
        self.stacks = preparation.stacks
        self.frame = resolve_format(self.backend.tokenizer, config.prompt)
        provenance = {
            **current(),
            **self.backend.facts(),
            "host": socket.gethostname(),
            "settings": config.settings(),
            "executor": config.executor,
            "prompt_format": self.frame.name,
        }
        self.started = Started(provenance, preparation.calibration)

    def run(self, cell: Cell) -> Record:
        task, stack = self.tasks[cell.task], self.stacks[cell.method]
        if task.measures == "loss":
            record = run_loss_cell(cell, cast(LongText, task), stack, self.backend, self.config.seed)
        else:
            record = run_cell(cell, task, stack, self.backend, self.config.seed, self.frame)
        return replace(record, meta={**record.meta, "worker": self.name, "workers_built_here": Worker.built})


def request_of(sample: Sample, mode: str) -> Request:
    """The request that reads ``sample`` in question mode ``mode`` (with its chat turns when chat-formatted)."""
    chat = None
    if sample.frame.name == "chat":
        chat = (sample.context + sample.question, sample.frame.answer_prefix(sample.answer_prefix))
    return Request(sample.prompt, sample.max_new_tokens, sample.stop, sample.question_offset, mode, chat)  # type: ignore[arg-type]


def metrics_of(sample: Sample, generation: Generation, score: float) -> dict[str, float | int | None]:
    """The declared metrics of a finished cell."""
    decode_tok_s = generation.decode_steps / generation.decode_seconds if generation.decode_seconds else None
    return {
        "score": score,
        "seconds": generation.seconds,
        "prefill_seconds": generation.prefill_seconds,
        "decode_seconds": generation.decode_seconds,
        "decode_tok_s": decode_tok_s,
        "decode_steps": generation.decode_steps,
        "peak_rss_mb": generation.peak_rss_mb,
        "peak_gpu_mb": generation.peak_gpu_mb,
        "kv_cache_bytes": generation.kv_cache_bytes,
        "compressed_kv_bytes": generation.compressed_kv_bytes,
        "realized_tokens": sample.meta["realized_tokens"],
        "reused_tokens": generation.reused_tokens,
        "new_tokens": generation.new_tokens,
        "realized_depth": sample.meta.get("realized_depth"),
        "random_baseline": sample.meta.get("random_baseline"),
    }


def run_cell(cell: Cell, task: Task, stack: MethodStack, backend: Any, seed: int, frame: PromptFormat) -> Record:
    """Generate the cell's sample, run it, score it. A server that cannot be reached stops the run."""
    try:
        sample = task.generate(backend.tokenizer, cell.context_length, cell.depth or 0.0, seed, cell.index, frame=frame)
        generation = backend.generate([request_of(sample, cell.mode)], stack)[0]
        expected = sample.meta["realized_tokens"]
        read = generation.prompt_tokens
        if read and read != expected and stack.of_kind("reader") is None:  # a reader decides itself what it reads
            raise LongreachError(
                f"the backend read {read} prompt tokens where the prompt has {expected}: its "
                "tokenizer or chat template differs from the one the prompt was fitted with"
            )
        score = task.score(sample, generation.text)
    except BackendUnavailable as exc:
        message = f"{exc}. Finished cells are saved; rerun with --resume once the server is back"
        raise BackendUnavailable(message) from None
    except (LongreachError, RuntimeError, ValueError, MemoryError) as exc:
        return Record(cell, "error", error=f"{type(exc).__name__}: {exc}")
    meta = {k: v for k, v in sample.meta.items() if k not in ("realized_tokens", "realized_depth", "random_baseline")}
    return Record(
        cell,
        "ok",
        metrics_of(sample, generation, score),
        prediction=generation.text,
        answers=list(sample.answers),
        meta=meta,
    )


def loss_metrics(sample: Sample, losses: Losses) -> dict[str, float | int | None]:
    """The declared metrics of a perplexity cell: mean loss, perplexity and costs (the read is all prefill)."""
    nll = statistics.fmean(losses.nll)
    return {
        "nll": nll,
        "perplexity": math.exp(nll),
        "seconds": losses.seconds,
        "prefill_seconds": losses.seconds,
        "peak_rss_mb": losses.peak_rss_mb,
        "peak_gpu_mb": losses.peak_gpu_mb,
        "realized_tokens": sample.meta["realized_tokens"],
    }


def bucket_means(values: list[float], bucket: int) -> list[float]:
    """Means of consecutive runs of ``bucket`` values (the last run may be shorter): loss by position."""
    return [statistics.fmean(values[i : i + bucket]) for i in range(0, len(values), bucket)]


def run_loss_cell(cell: Cell, task: LongText, stack: MethodStack, backend: Any, seed: int) -> Record:
    """Read the cell's text under ``stack`` and record its token losses: mean, perplexity, loss by position."""
    try:
        sample = task.generate(backend.tokenizer, cell.context_length, 0.0, seed, cell.index)
        window, stride = task.windows(backend.facts()["native_context_length"])
        losses = backend.losses(LossRequest(sample.context, window, stride), stack)
        if losses.tokens != sample.meta["realized_tokens"]:
            raise LongreachError(f"the backend read {losses.tokens} tokens where the text has {cell.context_length}")
    except (LongreachError, RuntimeError, ValueError, MemoryError) as exc:
        return Record(cell, "error", error=f"{type(exc).__name__}: {exc}")
    meta = {k: v for k, v in sample.meta.items() if k != "realized_tokens"}
    meta.update(window=window, stride=stride, bucket=task.bucket)
    series = {"loss_by_position": bucket_means(losses.nll, task.bucket)}
    return Record(cell, "ok", loss_metrics(sample, losses), meta=meta, series=series)
