"""The local backend: a transformers model in this process, with the method stack applied.

Each request is prefilled once with ``logits_to_keep=1`` (full logits at 8K tokens x 262K vocab would
be 8.6 GB), then decoded greedily one token at a time from the KV cache. Per request it records wall
and prefill seconds, the peak RSS of the process and the physical bytes of the KV cache. A stack with a
reader method hands the request to the reader, which owns the loop over the input and calls
:meth:`HFBackend.complete` for the answer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from longreach import tokens
from longreach.backends.base import Generation, Request, cut_at_stop
from longreach.measure import peak_rss
from longreach.methods import MethodStack
from longreach.models import LoadedModel, adapter

MIN_REUSE = 64  # shorter shared prefixes are recomputed: not worth holding a cache for


@dataclass
class _Previous:
    """The last request's stack, prompt ids and cache, kept for prefix reuse."""

    stack: str
    ids: list[int]
    cache: Any


class HFBackend:
    """Runs requests one at a time (batch 1) on ``loaded.model``.

    With ``reuse_prefix``, a request whose prompt has the same length and method stack as the previous one
    starts from the previous KV cache cropped to their common prefix (RULER-style haystacks shared across
    samples then cost only the part after the first difference). The prefill time then covers only the
    recomputed suffix, so leave it off when measuring time; ``reused_tokens`` records what was skipped.
    Stacks with cache or reader methods never reuse: their caches are not a plain function of the prefix.
    """

    def __init__(self, loaded: LoadedModel, reuse_prefix: bool = False) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.eos_ids = _eos_ids(loaded)
        self.reuse_prefix = reuse_prefix
        self._previous: _Previous | None = None

    def generate(self, requests: list[Request], stack: MethodStack) -> list[Generation]:
        return [self._one(request, stack) for request in requests]

    def _reusable(self, stack: MethodStack, prompt_ids: list[int]) -> tuple[int, Any]:
        """(tokens to skip, cache holding them) from the previous request, or (0, None)."""
        previous, self._previous = self._previous, None
        if previous is None or previous.stack != stack.repr or len(previous.ids) != len(prompt_ids):
            return 0, None
        if stack.of_kind("cache") or stack.of_kind("reader"):
            return 0, None
        common = 0
        for a, b in zip(previous.ids, prompt_ids, strict=True):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt_ids) - 1)
        if common < MIN_REUSE:
            return 0, None
        adapter.crop_cache(previous.cache, common)
        return common, previous.cache

    def _one(self, request: Request, stack: MethodStack) -> Generation:
        reader = stack.of_kind("reader")
        if reader is not None:
            with peak_rss() as peak:
                generation = reader.read(self, request, stack.without("reader"))
            return dataclasses.replace(generation, peak_rss_mb=peak.mb)
        prompt_ids = tokens.encode(self.tokenizer, request.prompt)
        reused, cache = self._reusable(stack, prompt_ids) if self.reuse_prefix else (0, None)
        with peak_rss() as peak:
            generation, cache = self.complete(prompt_ids, request, stack, reused=reused, cache=cache)
        if self.reuse_prefix:
            self._previous = _Previous(stack.repr, prompt_ids, cache)
        return dataclasses.replace(generation, peak_rss_mb=peak.mb)

    def complete(
        self, prompt_ids: list[int], request: Request, stack: MethodStack, reused: int = 0, cache: Any = None
    ) -> tuple[Generation, Any]:
        """Prefill ``prompt_ids`` (from token ``reused`` on, on top of ``cache``) under ``stack``, then decode
        greedily. Returns the generation (peak RSS left 0: the caller measures it) and the final cache."""
        model = self.loaded.model
        ids = torch.tensor([prompt_ids])
        new_ids: list[int] = []
        text = ""
        with torch.inference_mode(), stack.applied(self.loaded):
            start = time.perf_counter()
            logits, cache = adapter.forward(model, ids[:, reused:], cache, start=reused)
            prefill_seconds = time.perf_counter() - start
            kv_bytes = adapter.cache_bytes(cache)
            next_id = int(logits[0, -1].argmax())
            while next_id not in self.eos_ids:
                new_ids.append(next_id)
                text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
                cut = cut_at_stop(text, request.stop)
                if cut is not None:
                    text = cut
                    break
                if len(new_ids) >= request.max_new_tokens:
                    break
                position = len(prompt_ids) + len(new_ids) - 1
                logits, cache = adapter.forward(model, torch.tensor([[next_id]]), cache, start=position)
                next_id = int(logits[0, -1].argmax())
            kv_bytes = max(kv_bytes, adapter.cache_bytes(cache))
            seconds = time.perf_counter() - start
        generation = Generation(
            text=text,
            prompt_tokens=len(prompt_ids),
            new_tokens=len(new_ids),
            seconds=seconds,
            prefill_seconds=prefill_seconds,
            peak_rss_mb=0.0,
            kv_cache_bytes=kv_bytes,
            reused_tokens=reused,
        )
        return generation, cache


def _eos_ids(loaded: LoadedModel) -> set[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config."""
    found: set[int] = set()
    candidates: list[Any] = [loaded.tokenizer.eos_token_id]
    generation_config = getattr(loaded.model, "generation_config", None)
    if generation_config is not None:
        candidates.append(generation_config.eos_token_id)
    for value in candidates:
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(v for v in value if isinstance(v, int))
    return found
