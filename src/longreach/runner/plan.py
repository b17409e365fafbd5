"""A sweep's configuration and its cells: tasks x methods x lengths x depths x samples."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from longreach.backends.base import QUESTION_MODES
from longreach.errors import LongreachError
from longreach.methods import MethodStack, parse_stack
from longreach.models import DTYPES, check_device_name
from longreach.runner.store import Cell
from longreach.tasks import ParsedTask, parse_tasks

_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)([kKmM]?)$")


def parse_lengths(text: str) -> tuple[int, ...]:
    """``"1k,2k,4096,1m"`` -> (1024, 2048, 4096, 1048576); k = 1024 tokens, m = 1024k."""
    lengths = []
    for item in (part.strip() for part in text.split(",")):
        match = _LENGTH.match(item)
        if not match:
            raise LongreachError(f"bad length {item!r}: use token counts like 4096, 4k or 1m, comma-separated")
        scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
        value = float(match.group(1)) * scale
        if value != int(value) or value < 1:
            raise LongreachError(f"bad length {item!r}: it must be a whole number of tokens >= 1")
        lengths.append(int(value))
    return tuple(sorted(set(lengths)))


def parse_depths(text: str) -> tuple[float, ...]:
    """``"0,0.5,1"`` -> (0.0, 0.5, 1.0); each depth must lie in [0, 1]."""
    depths = []
    for item in (part.strip() for part in text.split(",")):
        try:
            value = float(item)
        except ValueError:
            raise LongreachError(f"bad depth {item!r}: use numbers in [0, 1], comma-separated") from None
        if not 0.0 <= value <= 1.0:
            raise LongreachError(f"depth {item} is outside [0, 1] (0 = start of the context, 1 = its end)")
        depths.append(value)
    return tuple(sorted(set(depths)))


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep needs; flat, so it round-trips through the CLI and the store."""

    model: str
    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    out: Path
    methods: tuple[str, ...] = ("none",)
    depths: tuple[float, ...] = (0.5,)
    samples: int = 1
    seed: int = 0
    dtype: str = "bf16"
    device: str = "cpu"  # hf: cpu | cuda | cuda:N
    resume: bool = False
    threshold: float = 0.85
    interleave: bool = False  # run every method on a sample before the next sample (fair timing comparisons)
    reuse_prefix: bool = False  # start each prefill from the previous cell's cache where prompts agree
    backend: str = "hf"  # hf | openai
    base_url: str = ""  # openai: the server, e.g. http://127.0.0.1:8000/v1
    api: str = "completions"  # openai: completions | chat
    tokenizer: str = ""  # openai: a local tokenizer (zoo name, HF dir, .gguf) instead of the server's endpoint
    concurrency: int = 4  # openai: requests in flight
    timeout: float = 600.0  # openai: seconds per request
    retries: int = 4  # openai: retries of a request on 429 / 5xx / no answer, with exponential backoff
    executor: str = "local"  # local | ray
    ray_address: str = ""  # ray: an existing cluster (default: start a local one)
    workers: int = 0  # ray: actors (0: one per CPU of the cluster)
    question_modes: tuple[str, ...] = ("aware",)  # aware | agnostic: question read before / after compression


@dataclass(frozen=True)
class Plan:
    """Parsed tasks and method stacks (validated before any model is loaded) and the cells they span."""

    tasks: list[ParsedTask]
    stacks: list[MethodStack]
    config: SweepConfig

    @classmethod
    def from_config(cls, config: SweepConfig) -> Plan:
        if config.samples < 1:
            raise LongreachError(f"--samples must be >= 1; got {config.samples}")
        if not config.lengths:
            raise LongreachError("give at least one length, e.g. --lengths 1k,2k")
        if config.dtype not in DTYPES:
            raise LongreachError(f"unknown dtype {config.dtype!r}; valid: {', '.join(DTYPES)}")
        bad = [m for m in config.question_modes if m not in QUESTION_MODES]
        if bad or not config.question_modes:
            raise LongreachError(f"question mode(s) {bad or '(none)'}: valid: {', '.join(QUESTION_MODES)}")
        if not 0.0 < config.threshold <= 1.0:
            raise LongreachError(f"threshold must be in (0, 1]; got {config.threshold}")
        check_device_name(config.device)
        if config.backend not in ("hf", "openai"):
            raise LongreachError(f"unknown backend {config.backend!r}; valid: hf, openai")
        if config.backend == "openai" and not config.base_url:
            raise LongreachError("--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1")
        if config.api not in ("completions", "chat"):
            raise LongreachError(f"unknown api {config.api!r}; valid: completions, chat")
        if config.executor not in ("local", "ray"):
            raise LongreachError(f"unknown executor {config.executor!r}; valid: local, ray")
        if config.concurrency < 1 or config.workers < 0:
            raise LongreachError(
                f"concurrency must be >= 1 and workers >= 0; got {config.concurrency}, {config.workers}"
            )
        tasks = parse_tasks(",".join(config.tasks))
        stacks = list({stack.repr: stack for stack in map(parse_stack, config.methods)}.values())
        return cls(tasks=tasks, stacks=stacks, config=config)

    def cells(self) -> list[Cell]:
        """Every cell, grouped by method, then task, length, depth and sample index (and question mode); with
        ``interleave``, grouped by task, length, sample and mode, every method back to back (so drift hits all
        methods alike, and methods compressing the same read can share it: see HFBackend's reuse_prefix)."""
        c = self.config
        cells = []
        for stack, parsed in itertools.product(self.stacks, self.tasks):
            depths: tuple[float | None, ...] = c.depths if parsed.task.uses_depth else (None,)
            available = parsed.task.num_instances()
            samples = c.samples if available is None else min(c.samples, available)
            for length, depth, index, mode in itertools.product(c.lengths, depths, range(samples), c.question_modes):
                cells.append(Cell(parsed.spec, stack.repr, length, depth, index, mode))
        if c.interleave:
            position = {stack.repr: i for i, stack in enumerate(self.stacks)}
            order = {parsed.spec: i for i, parsed in enumerate(self.tasks)}
            cells.sort(
                key=lambda cell: (
                    order[cell.task],
                    cell.context_length,
                    cell.index,
                    cell.depth or 0.0,
                    c.question_modes.index(cell.mode),
                    position[cell.method],
                )
            )
        return cells
