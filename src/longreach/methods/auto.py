"""``auto:TARGET``: choose a context-extension method and its parameters for a target length by a short
calibration on the model itself, and print the choice as a reusable spec.

Calibration: a few passkey prompts of exactly TARGET tokens (depths 0.25 and 0.75); each candidate stack
is scored by the mean negative log-likelihood of the gold answer (teacher-forced, one forward pass per
prompt, no decoding), a continuous signal that ranks candidates even where greedy answers would tie.
Candidates for s = TARGET / L (rounded up to a half): yarn, ntk, dynamic and linear at s, SelfExtend
planned for TARGET, and none. The result is cached on disk per (model file, dtype, target).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from longreach import tokens
from longreach.methods.base import KIND_ORDER, Kind, Method
from longreach.methods.spec import MethodStack, parse_stack, register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel

CALIBRATION_DEPTHS = (0.25, 0.75)


@register
@dataclass(frozen=True)
class Auto(Method):
    """Reads with the method :func:`calibrate` picks for ``target`` (see the module docstring)."""

    target: int = field(default=0, metadata={"help": "the length to read, in tokens"})

    name: ClassVar[str] = "auto"
    reads_length: ClassVar[bool] = True
    kind: ClassVar[Kind] = "position"
    summary: ClassVar[str] = "calibrate on the model and pick the extension method for a target length"
    example: ClassVar[str] = "auto:target=4096"

    def __post_init__(self) -> None:
        require(self.target > 0, "auto: give the target length, e.g. auto:32768")

    def conflict_with(self, other: Method) -> str | None:
        if other.kind in ("position", "attention"):
            return "auto chooses the position or attention method itself"
        return None

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        """Calibrate (or read the cached calibration) and apply the chosen method. A sweep resolves ``auto``
        up front instead, so that the choice is recorded with the results."""
        chosen = parse_stack(cached_calibration(loaded, self.target).chosen)
        with chosen.applied(loaded):
            yield


@dataclass(frozen=True)
class Calibration:
    """The chosen spec and every candidate's mean answer NLL (nats per token)."""

    target: int
    chosen: str
    nll: dict[str, float]


def candidates(target: int, native: int) -> list[str]:
    """The candidate specs for reading ``target`` tokens with a native window ``native``."""
    if target <= native:
        return ["none"]
    scale = math.ceil(2 * target / native) / 2
    factor = f"{scale:g}"
    return [
        f"yarn:factor={factor}",
        f"ntk:factor={factor}",
        f"dynamic:factor={factor}",
        f"linear:factor={factor}",
        f"selfextend:target={target}",
        "none",
    ]


def answer_nll(loaded: LoadedModel, stack: MethodStack, prompt: str, answer: str) -> float:
    """Mean negative log-likelihood per token of ``answer`` following ``prompt`` under ``stack``."""
    prompt_ids = tokens.encode(loaded.tokenizer, prompt)
    answer_ids = loaded.tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids], device=loaded.device)
    with torch.inference_mode(), stack.applied(loaded):
        logits, _ = adapter.forward(loaded.model, ids, logits_to_keep=len(answer_ids) + 1)
    log_probs = torch.log_softmax(logits[0, :-1].float(), dim=-1).cpu()
    return -float(log_probs[torch.arange(len(answer_ids)), torch.tensor(answer_ids)].mean())


def calibrate(loaded: LoadedModel, target: int, seed: int = 0) -> Calibration:
    """Score every candidate on passkey prompts of ``target`` tokens; the lowest mean NLL wins."""
    from longreach.tasks import parse_task

    task = parse_task("passkey").task
    samples = [task.generate(loaded.tokenizer, target, depth, seed, 0) for depth in CALIBRATION_DEPTHS]
    nll = {}
    for spec in candidates(target, loaded.native_context_length):
        stack = parse_stack(spec)
        nll[spec] = sum(answer_nll(loaded, stack, s.prompt, f" {s.answers[0]}.") for s in samples) / len(samples)
    return Calibration(target, min(nll, key=nll.__getitem__), nll)


def cached_calibration(loaded: LoadedModel, target: int, seed: int = 0) -> Calibration:
    """:func:`calibrate`, remembered on disk per (model source, dtype, target, seed)."""
    from longreach.models import cache_dir

    key = hashlib.sha256(f"{loaded.source}|{loaded.dtype}|{target}|{seed}|v1".encode()).hexdigest()[:16]
    path = cache_dir() / "calibration" / f"{key}.json"
    if path.is_file():
        return Calibration(**json.loads(path.read_text()))
    result = calibrate(loaded, target, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.__dict__))
    return result


def resolve(stack: MethodStack, loaded: LoadedModel, seed: int = 0) -> tuple[MethodStack, Calibration | None]:
    """Replace an ``auto`` method in ``stack`` by the calibrated choice (other methods are kept)."""
    auto = next((m for m in stack.methods if isinstance(m, Auto)), None)
    if auto is None:
        return stack, None
    result = cached_calibration(loaded, auto.target, seed)
    chosen = parse_stack(result.chosen).methods
    rest = tuple(m for m in stack.methods if m is not auto)
    return MethodStack(tuple(sorted(chosen + rest, key=lambda m: KIND_ORDER.index(m.kind)))), result
