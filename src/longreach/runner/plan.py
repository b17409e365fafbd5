"""A run's configuration and its cells: tasks x methods x lengths x depths x samples x question modes.

:class:`Grid` is what to measure, :class:`RunConfig` how and where (model settings, backend and executor specs,
prompt format, output folder, resume policy). :class:`Plan` validates everything that needs no I/O and spans the
cells.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longreach.backends import BackendSpec, ModelSettings, parse_backend
from longreach.engine.losses import check_stack as check_loss_stack
from longreach.errors import LongreachError
from longreach.generation import QUESTION_MODES
from longreach.methods import MethodStack, parse_stack
from longreach.models import DTYPES, check_device_name
from longreach.prompts import PROMPT_CHOICES
from longreach.results import Cell
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
class Grid:
    """What to measure."""

    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    methods: tuple[str, ...] = ("none",)
    depths: tuple[float, ...] = (0.5,)
    samples: int = 1
    question_modes: tuple[str, ...] = ("aware",)


@dataclass(frozen=True)
class RunConfig:
    """How and where to measure a grid. Flat and picklable: executors send it to their workers."""

    grid: Grid
    out: Path
    model: str
    dtype: str = "bf16"
    device: str = "cpu"  # where the hf backend runs: cpu | cuda | cuda:N
    seed: int = 0
    backend: str = "hf"  # a backend spec (see longreach.backends)
    executor: str = "local"  # an executor spec (see longreach.runner.executors)
    prompt: str = "auto"  # auto | raw | chat
    reuse_prefix: bool = False  # continue kept reads where prompts agree (faster; prefill covers the rest only)
    interleave: bool = False  # every method on a sample before the next sample (fair timing comparisons)
    resume: bool = False
    resume_anyway: bool = False  # resume even when code or settings changed (each cell keeps its provenance)
    threshold: float = 0.85

    def model_settings(self) -> ModelSettings:
        return ModelSettings(self.model, self.dtype, self.device, self.reuse_prefix, self.seed)

    def backend_spec(self) -> BackendSpec:
        return parse_backend(self.backend)

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the stored one (the grid may grow; the report threshold may change)."""
        return {
            "model": self.model,
            "dtype": self.dtype,
            "device": self.device,
            "seed": self.seed,
            "backend": self.backend_spec().identity(),
            "prompt": self.prompt,
            "reuse_prefix": self.reuse_prefix,
            "interleave": self.interleave,
        }


@dataclass(frozen=True)
class Plan:
    """Parsed tasks and method stacks (validated before any model is loaded) and the cells they span."""

    tasks: list[ParsedTask]
    stacks: list[MethodStack]
    config: RunConfig
    backend: str = field(default="hf")

    @classmethod
    def from_config(cls, config: RunConfig) -> Plan:
        grid = config.grid
        if grid.samples < 1:
            raise LongreachError(f"--samples must be >= 1; got {grid.samples}")
        if not grid.lengths:
            raise LongreachError("give at least one length, e.g. --lengths 1k,2k")
        if config.dtype not in DTYPES:
            raise LongreachError(f"unknown dtype {config.dtype!r}; valid: {', '.join(DTYPES)}")
        bad = [m for m in grid.question_modes if m not in QUESTION_MODES]
        if bad or not grid.question_modes:
            raise LongreachError(f"question mode(s) {bad or '(none)'}: valid: {', '.join(QUESTION_MODES)}")
        if not 0.0 < config.threshold <= 1.0:
            raise LongreachError(f"threshold must be in (0, 1]; got {config.threshold}")
        if config.prompt not in PROMPT_CHOICES:
            raise LongreachError(f"unknown prompt format {config.prompt!r}; valid: {', '.join(PROMPT_CHOICES)}")
        check_device_name(config.device)
        backend = config.backend_spec()
        tasks = parse_tasks(",".join(grid.tasks))
        stacks = list({stack.repr: stack for stack in map(parse_stack, grid.methods)}.values())
        if any(parsed.task.measures == "loss" for parsed in tasks):
            for stack in stacks:
                check_loss_stack(stack)
        return cls(tasks=tasks, stacks=stacks, config=config, backend=backend.name)

    def cells(self, prompt: str) -> list[Cell]:
        """Every cell (``prompt``: the resolved format), grouped by method, then task, length, depth and sample
        index (and question mode); with ``interleave``, grouped by task, length, sample and mode, every method back
        to back (so drift hits all methods alike, and methods compressing the same read can share it)."""
        grid = self.config.grid
        cells = []
        for stack, parsed in itertools.product(self.stacks, self.tasks):
            depths: tuple[float | None, ...] = grid.depths if parsed.task.uses_depth else (None,)
            available = parsed.task.num_instances()
            samples = grid.samples if available is None else min(grid.samples, available)
            loss = parsed.task.measures == "loss"  # a text scored token by token: raw, no question to place
            modes = ("aware",) if loss else grid.question_modes
            coordinates = itertools.product(grid.lengths, depths, range(samples), modes)
            for length, depth, index, mode in coordinates:
                cell_prompt = "raw" if loss else prompt
                cells.append(Cell(parsed.spec, stack.repr, length, depth, index, mode, self.backend, cell_prompt))
        if self.config.interleave:
            position = {stack.repr: i for i, stack in enumerate(self.stacks)}
            order = {parsed.spec: i for i, parsed in enumerate(self.tasks)}
            mode_order = {mode: i for i, mode in enumerate(grid.question_modes)}
            cells.sort(
                key=lambda cell: (
                    order[cell.task],
                    cell.context_length,
                    cell.index,
                    cell.depth or 0.0,
                    mode_order.get(cell.mode, 0),
                    position[cell.method],
                )
            )
        return cells
