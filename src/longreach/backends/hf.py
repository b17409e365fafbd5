"""The local backend: a transformers model in this process, with the method stack applied.

Each request is prefilled once with ``logits_to_keep=1`` (full logits at 8K tokens x 262K vocab would
be 8.6 GB), then decoded greedily one token at a time from the KV cache. Per request it records wall,
prefill and decode seconds, the peak RSS of the process (and on a GPU the peak memory torch allocated there)
and the physical bytes of the KV cache. A stack with
a reader method hands the request to the reader, which owns the loop over the input and calls
:meth:`HFBackend.complete` for the answer.

With a cache method (or a question-agnostic request) the prompt is read in two parts: first the part that
is compressed (question-aware: all but the last token; question-agnostic: the context), with the cache
method compressing each layer as it is read, then the rest on top of the compressed cache. Every new token
is therefore computed from the compressed cache, as in kvpress's pipeline.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import torch

from longreach import tokens
from longreach.backends.base import Generation, Request, cut_at_stop
from longreach.errors import LongreachError
from longreach.measure import peak_gpu, peak_rss
from longreach.methods import Method, MethodStack
from longreach.models import LoadedModel, adapter

MIN_REUSE = 64  # shorter shared prefixes are recomputed: not worth holding a cache for


@dataclass
class _Previous:
    """The last request's stack, prompt ids and cache, kept for prefix reuse."""

    stack: str
    ids: list[int]
    cache: Any


@dataclass
class _Read:
    """An uncompressed first part, kept so the next request with the same first part (another cache method or
    ratio on the same sample, another question on the same context) compresses a copy instead of re-reading
    it: the full cache and what every layer's attention read (its hidden states, for the methods' scores)."""

    key: tuple[str, tuple[int, ...]]
    cache: Any
    inputs: list[adapter.LayerInput]


class HFBackend:
    """Runs requests one at a time (batch 1) on ``loaded.model``.

    With ``reuse_prefix``, a request whose prompt has the same length and method stack as the previous one
    starts from the previous KV cache cropped to their common prefix (RULER-style haystacks shared across
    samples then cost only the part after the first difference). The prefill time then covers only the
    recomputed suffix, so leave it off when measuring time; ``reused_tokens`` records what was skipped.
    Stacks with cache or reader methods never reuse a prefix: their caches are not a plain function of it.
    With a cache method, ``reuse_prefix`` instead keeps the last uncompressed first part (see :class:`_Read`):
    a request whose first part is identical token for token compresses a copy of it (a compressed cache is
    never continued by another prompt).
    """

    def __init__(self, loaded: LoadedModel, reuse_prefix: bool = False) -> None:
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.eos_ids = _eos_ids(loaded)
        self.reuse_prefix = reuse_prefix
        self._previous: _Previous | None = None
        self._read: _Read | None = None

    def generate(self, requests: list[Request], stack: MethodStack) -> list[Generation]:
        device = self.loaded.device
        if device == "cpu":  # torch's default already; the device context would add overhead to every op
            return [self._one(request, stack) for request in requests]
        generations = []
        for request in requests:
            with torch.device(device), peak_gpu(device) as gpu:  # new tensors (ids, masks, indices) on the GPU
                generation = self._one(request, stack)
            generations.append(dataclasses.replace(generation, peak_gpu_mb=gpu.mb))
        return generations

    def _reusable(self, stack: MethodStack, prompt_ids: list[int]) -> tuple[int, Any]:
        """(tokens to skip, cache holding them) from the previous request, or (0, None)."""
        previous, self._previous = self._previous, None
        if previous is None or previous.stack != stack.repr or len(previous.ids) != len(prompt_ids):
            return 0, None
        if stack.of_kind("cache") or stack.of_kind("reader") or not adapter.is_plain_cache(previous.cache):
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

    def _split(self, request: Request, prompt_ids: list[int], stack: MethodStack, method: Method | None) -> int | None:
        """Tokens read (and compressed) before the rest of the prompt; None: the prompt is read at once."""
        if request.mode == "agnostic":
            if request.question_offset is None:
                raise LongreachError("question-agnostic evaluation needs the question's offset in the prompt")
            context_ids = tokens.encode(self.tokenizer, request.prompt[: request.question_offset])
            split = next(
                (i for i, (a, b) in enumerate(zip(context_ids, prompt_ids, strict=False)) if a != b),
                min(len(context_ids), len(prompt_ids)),
            )
            if not 1 <= split < len(prompt_ids):
                raise LongreachError(
                    f"question-agnostic evaluation needs a non-empty context and question; the context has "
                    f"{split} of the prompt's {len(prompt_ids)} tokens"
                )
            return split
        if request.mode != "aware":
            raise LongreachError(f"unknown question mode {request.mode!r}; valid: aware, agnostic")
        if len(prompt_ids) < 2:
            return None
        if method is None and not self._matching_read(stack, prompt_ids[:-1]):
            return None
        return len(prompt_ids) - 1

    def _read_key(self, stack: MethodStack, first_ids: list[int]) -> tuple[str, tuple[int, ...]]:
        base = MethodStack(tuple(m for m in stack.methods if m.kind != "cache")).repr
        return base, tuple(first_ids)

    def _matching_read(self, stack: MethodStack, first_ids: list[int]) -> bool:
        """True when the kept uncompressed read is exactly ``first_ids`` under the same non-cache methods."""
        return self.reuse_prefix and self._read is not None and self._read.key == self._read_key(stack, first_ids)

    def _read_compressed(self, first: torch.Tensor, stack: MethodStack, method: Method | None) -> tuple[int, Any]:
        """Read ``first`` (1, t) from position 0 and compress it with ``method``: (reused tokens, cache)."""
        model = self.loaded.model
        if method is None and not self._matching_read(stack, first[0].tolist()):
            return 0, adapter.forward(model, first)[1]
        if not self.reuse_prefix:
            with method.compressing(self.loaded):
                return 0, adapter.forward(model, first)[1]
        key = self._read_key(stack, first[0].tolist())
        reused = first.shape[1]
        if self._read is None or self._read.key != key:
            self._read, reused = None, 0  # free the previous one before reading
            inputs: list[adapter.LayerInput] = []
            with adapter.after_attention(model, lambda observed, _cache: inputs.append(observed)):
                full = adapter.forward(model, first)[1]
            self._read = _Read(key, full, inputs)
        cache = adapter.clone_cache(self._read.cache)
        if method is None:
            return reused, cache
        for observed in self._read.inputs:
            method.compress_layer(observed, cache, len(self._read.inputs))
        return reused, cache

    def _one(self, request: Request, stack: MethodStack) -> Generation:
        reader = stack.of_kind("reader")
        if reader is not None:
            with peak_rss() as peak:
                generation = reader.read(self, request, stack.without("reader"))
            return dataclasses.replace(generation, peak_rss_mb=peak.mb)
        prompt_ids = tokens.encode(self.tokenizer, request.prompt)
        ids = torch.tensor([prompt_ids])
        method = stack.of_kind("cache")
        split = self._split(request, prompt_ids, stack, method)
        with torch.inference_mode(), stack.applied(self.loaded), peak_rss() as peak:
            start = time.perf_counter()
            if split is None:
                reused, cache = self._reusable(stack, prompt_ids) if self.reuse_prefix else (0, None)
                logits, cache = adapter.forward(self.loaded.model, ids[:, reused:], cache, start=reused)
                compressed_bytes = adapter.cache_bytes(cache)
            else:
                reused, cache = self._read_compressed(ids[:, :split], stack, method)
                compressed_bytes = adapter.cache_bytes(cache)
                logits, cache = adapter.forward(self.loaded.model, ids[:, split:], cache, start=split)
                if method is None and request.mode == "aware":  # read in two parts only to reuse a read
                    compressed_bytes = adapter.cache_bytes(cache)
            generation, cache = self._decode(len(prompt_ids), request, logits, cache, start, reused)
        if self.reuse_prefix and split is None:
            self._previous = _Previous(stack.repr, prompt_ids, cache)
        return dataclasses.replace(generation, peak_rss_mb=peak.mb, compressed_kv_bytes=compressed_bytes)

    def complete(
        self, prompt_ids: list[int], request: Request, stack: MethodStack, reused: int = 0, cache: Any = None
    ) -> tuple[Generation, Any]:
        """Prefill ``prompt_ids`` (from token ``reused`` on, on top of ``cache``) under ``stack``, then decode
        greedily (the readers' last step). Returns the generation (peak RSS left 0: the caller measures it)
        and the final cache."""
        ids = torch.tensor([prompt_ids])
        with torch.inference_mode(), stack.applied(self.loaded):
            start = time.perf_counter()
            logits, cache = adapter.forward(self.loaded.model, ids[:, reused:], cache, start=reused)
            return self._decode(len(prompt_ids), request, logits, cache, start, reused)

    def _decode(
        self, prompt_tokens: int, request: Request, logits: torch.Tensor, cache: Any, start: float, reused: int
    ) -> tuple[Generation, Any]:
        """Greedy decoding after a prefill that began at ``start`` (perf_counter) and ended now with ``logits``
        (1, t, vocab) over a cache of ``prompt_tokens`` tokens. Returns the generation and the final cache."""
        if logits.is_cuda:  # kernels run asynchronously: wait for the prefill before reading the clock
            torch.cuda.synchronize(logits.device)
        prefill_seconds = time.perf_counter() - start
        kv_bytes = adapter.cache_bytes(cache)
        after_prefill = kv_bytes
        new_ids: list[int] = []
        text = ""
        decode_seconds, decode_steps = 0.0, 0
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
            step = time.perf_counter()
            position = prompt_tokens + len(new_ids) - 1
            logits, cache = adapter.forward(self.loaded.model, torch.tensor([[next_id]]), cache, start=position)
            next_id = int(logits[0, -1].argmax())
            decode_seconds += time.perf_counter() - step
            decode_steps += 1
        kv_bytes = max(kv_bytes, adapter.cache_bytes(cache))
        generation = Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            new_tokens=len(new_ids),
            seconds=time.perf_counter() - start,
            prefill_seconds=prefill_seconds,
            peak_rss_mb=0.0,
            kv_cache_bytes=kv_bytes,
            reused_tokens=reused,
            decode_seconds=decode_seconds,
            decode_steps=decode_steps,
            compressed_kv_bytes=after_prefill,
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
