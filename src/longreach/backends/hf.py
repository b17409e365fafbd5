"""``hf``: a transformers model in this process, run by the :class:`~longreach.engine.Engine` under method stacks.
The backend is a thin request -> engine adapter; ``prepare`` refuses lengths the model cannot hold and
calibrates ``auto`` stacks once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import psutil
import torch

from longreach.backends.base import BackendSpec, ModelSettings, Preparation, register_backend
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Generation, Losses, LossRequest, Request
from longreach.methods import MethodStack, auto, parse_stack
from longreach.models import LoadedModel, load_model, load_tokenizer, resolve

GENERATION_BUDGET = 128  # tokens a capacity check allows for the answer on top of the prompt


@register_backend
@dataclass(frozen=True)
class HFSpec(BackendSpec):
    """The local backend (no options: ``--model``, ``--dtype``, ``--device`` and ``--reuse-prefix`` set it)."""

    name: ClassVar[str] = "hf"
    summary: ClassVar[str] = "a transformers model in this process; applies every method"

    def load_tokenizer(self, settings: ModelSettings) -> Any:
        return load_tokenizer(resolve(settings.model))

    def build(self, settings: ModelSettings) -> HFBackend:
        loaded = load_model(settings.model, settings.dtype, settings.device)
        return HFBackend(Engine(loaded, reuse_prefix=settings.reuse_prefix), settings.seed)


class HFBackend:
    """Requests one at a time through the engine."""

    concurrency = 1

    def __init__(self, engine: Engine, seed: int = 0) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.seed = seed

    @property
    def loaded(self) -> LoadedModel:
        return self.engine.loaded

    def facts(self) -> dict[str, Any]:
        loaded = self.loaded
        facts = {
            "model": loaded.name,
            "model_source": loaded.source,
            "weights": loaded.weights,
            "native_context_length": loaded.native_context_length,
            "dtype": loaded.dtype,
            "device": loaded.device,
        }
        if loaded.device.startswith("cuda"):
            facts["gpu"] = torch.cuda.get_device_name(loaded.device)
        return facts

    def prepare(self, stacks: list[MethodStack], longest: dict[str, int], calibrated: dict[str, str]) -> Preparation:
        reads = [longest[stack.repr] for stack in stacks if stack.repr in longest and not _bounded(stack)]
        if reads:  # a bounded reader's memory does not grow with the input
            check_capacity(self.loaded, max(reads))
        resolved, calibration = {}, {}
        for stack in stacks:
            if stack.repr in calibrated:
                resolved[stack.repr] = parse_stack(calibrated[stack.repr])
                continue
            resolved[stack.repr], result = auto.resolve(stack, self.loaded, self.seed)
            if result is not None:
                calibration[stack.repr] = {"resolved": resolved[stack.repr].repr, "nll": result.nll}
        return Preparation(resolved, calibration)

    def generate(self, requests: list[Request], stack: MethodStack) -> list[Generation]:
        return [self.engine.generate(request, stack) for request in requests]

    def losses(self, request: LossRequest, stack: MethodStack) -> Losses:
        """Token losses over a text (perplexity); only a local model gives them."""
        return self.engine.losses(request, stack)


def _bounded(stack: MethodStack) -> bool:
    """True when the stack's reader keeps positions and memory bounded whatever the input length."""
    reader = stack.of_kind("reader")
    return bool(reader is not None and getattr(reader, "bounded_memory", False))


def check_capacity(loaded: LoadedModel, longest: int) -> None:
    """Refuse lengths the model cannot run at all: past an absolute position table, or beyond memory."""
    need_tokens = longest + GENERATION_BUDGET
    if loaded.hard_max_length is not None and need_tokens > loaded.hard_max_length:
        raise LongreachError(
            f"{loaded.name} has absolute positions up to {loaded.hard_max_length} tokens; {longest} tokens "
            f"cannot run. Use lengths <= {loaded.hard_max_length - GENERATION_BUDGET}"
        )
    need = loaded.kv_bytes_per_token * need_tokens
    available = psutil.virtual_memory().available
    if need > available:
        raise LongreachError(
            f"{longest} tokens need {need / 2**30:.1f} GiB of KV cache for {loaded.name} ({loaded.dtype}); "
            f"{available / 2**30:.1f} GiB is available. Use shorter lengths or a cache method"
        )
