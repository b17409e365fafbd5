"""The stacks a server runs: one model id per method stack, with its reach, its KV cost per token and whether
its requests decode together in one batch (and if not, why)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from longreach.engine import Engine
from longreach.generation import Request
from longreach.methods import MethodStack
from longreach.models import LoadedModel, adapter

_PROBE = "The quick brown fox jumps over the lazy dog. " * 4


@dataclass(frozen=True)
class ServedStack:
    """A method stack behind one model id (``smollm2-135m+yarn:factor=4``; the bare model name for ``none``).

    ``reach``: the longest prompt served (the native window, times a position method's ``factor``, capped by an
    absolute position table). ``kv_bytes_per_token``: what one token adds to an uncompressed cache, the bound
    admission reserves until a prefill has measured the real cache. ``serial`` is None when requests decode
    in one batch, else the reason each decodes alone.
    """

    model_id: str
    stack: MethodStack
    reach: int
    kv_bytes_per_token: int
    serial: str | None

    @property
    def batched(self) -> bool:
        return self.serial is None


def model_id(model: str, stack: MethodStack) -> str:
    """``smollm2-135m`` for ``none``, ``smollm2-135m+yarn:factor=4`` otherwise (a path gives its file stem)."""
    name = Path(model).stem if Path(model).expanduser().exists() else model
    return name if stack.repr == "none" else f"{name}+{stack.repr}"


def reach(loaded: LoadedModel, stack: MethodStack) -> int:
    """The longest prompt the stack is meant to read: native window x the position method's ``factor``."""
    if loaded.hard_max_length is not None:
        return loaded.hard_max_length
    factor = getattr(stack.of_kind("position"), "factor", None)
    scale = factor if isinstance(factor, (int, float)) and factor > 1 else 1
    return int(loaded.native_context_length * scale)


def serial_reason(engine: Engine, stack: MethodStack) -> str | None:
    """Why requests under ``stack`` cannot share a batched decode step, or None when they can: the stack has only
    position and cache methods, none depends on the length read, and its cache after a prefill (probed on a
    short prompt) is a plain cache, which rows can be padded into."""
    if stack.of_kind("reader") is not None:
        return "a reader owns the loop over the input: each request runs whole, one at a time, its answer sent at once"
    if stack.of_kind("attention") is not None:
        return "an attention method keeps its own per-request cache layout: one request per decode step"
    if stack.reads_length:
        return "the stack's computation depends on the length read, which differs between requests"
    ids = engine.encode(_PROBE)
    with torch.inference_mode(), stack.applied(engine.loaded):
        read = engine.read_prompt(ids, Request(_PROBE, 1), stack)
    if not adapter.is_plain_cache(read.cache):
        return "its compressed cache is not a plain cache (quantized storage or layer-varying lengths)"
    return None


def served_stacks(engine: Engine, model: str, stacks: list[MethodStack]) -> dict[str, ServedStack]:
    """Model id -> served stack, in the order given."""
    loaded = engine.loaded
    return {
        model_id(model, stack): ServedStack(
            model_id(model, stack), stack, reach(loaded, stack), loaded.kv_bytes_per_token, serial_reason(engine, stack)
        )
        for stack in stacks
    }
