"""The engine: a loaded model under method stacks. Prefill, compressed reads, greedy decode, and honest measurement.

Each request is prefilled with ``logits_to_keep=1`` (full logits at 8K tokens x 262K vocab would be 8.6 GB), then
decoded greedily one token at a time from the KV cache. Per request it records wall, prefill (after the device
has finished) and decode seconds, the process's peak RSS, on a GPU the peak memory torch allocated there, and
the physical bytes of the KV cache. A stack with a reader hands the request to the reader, which owns the loop
over the input and calls :meth:`Engine.complete` for the answer (readers are engine clients).

With a cache method (or a question-agnostic request) the prompt is read in two parts: first the part that is
compressed (question-aware: all but the last token; question-agnostic: the context), with the cache method
compressing each layer as it is read, then the rest on top of the compressed cache. Every new token is therefore
computed from the compressed cache, as in kvpress's pipeline. The compressed part is read by the method
(:meth:`~longreach.methods.cache.base.CacheMethod.read`): a forward that only fills the cache (its logits are never
read, so the last layer's attention output, MLP and head are skipped: :func:`~longreach.models.adapter.fill_cache`),
scoring with the queries the attention call computed, or, with an evicting method's opt-in ``read_chunk``, a read
in chunks that evicts after each. One :class:`~longreach.engine.prefix.PrefixCache` serves both prefix reuse and
shared reads between cache methods (a chunked read reads the prompt itself).

Decoding (issue 18, measured in ``benchmarks/engine_speed.py``): single-query attention steps run with the query
heads of each KV group packed (:mod:`longreach.models.adapter.sdpa`: about 7x faster per layer than transformers'
``enable_gqa`` path on the CPU); bf16 linear layers on the CPU read weights prepacked once for oneDNN
(:mod:`longreach.models.adapter.linear`: a second copy of the weights, kept on the model); a plain cache gets room
for the whole answer up front, so a step writes its keys in place instead of copying the cache
(:func:`~longreach.models.adapter.preallocated`; caches a cache method made are left as they are); and the answer's
text grows with tokenizers' ``DecodeStream`` (:mod:`.text`) instead of being re-decoded every step. The one host
read a step is the next id (the end-of-sequence and stop checks need it). A prompt read on top of a cache (a kept
prefix, a question after its compressed context, a reader's last step) runs its attention without the mask
transformers builds for it (:func:`~longreach.models.adapter.sdpa.continued_sdpa`: over the cached keys, then
causally over its own, merged), so the CPU kernel skips the blocks the causal mask hides instead of computing them
all. Each of the five is named in :data:`SPEEDUPS`; ``Engine(speedups=())`` reads and decodes as before issue 18
(for before/after measurements).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from longreach import tokens
from longreach.engine.losses import check_stack, token_nll
from longreach.engine.prefix import PrefixCache
from longreach.engine.text import AnswerText
from longreach.errors import LongreachError
from longreach.generation import Generation, Losses, LossRequest, Request
from longreach.measure import peak_gpu, peak_rss
from longreach.methods import Method, MethodStack
from longreach.models import LoadedModel, adapter


@dataclass
class PromptRead:
    """A prefilled prompt: the logits of its last token (1, 1, vocab), the cache, the tokens taken from a kept
    read, and the cache bytes once the compressed part (or the whole prompt) was read."""

    logits: torch.Tensor
    cache: Any
    reused: int
    compressed_bytes: int


SPEEDUPS = ("packed_attention", "packed_linears", "preallocated_cache", "decode_stream", "continued_attention")


class Engine:
    """Runs requests one at a time (batch 1) on ``loaded.model``.

    ``reuse_prefix``: keep the last uncompressed read (see :class:`PrefixCache`). The prefill time then covers
    only the recomputed part, so leave it off when measuring time; ``reused_tokens`` records what was skipped.
    ``speedups``: which of :data:`SPEEDUPS` the engine uses (all by default; ``()`` reads and decodes as the engine
    did before issue 18: transformers' attention and linear layers, a cache grown by concatenation, the answer
    re-decoded every step). Every choice gives the same tokens.
    """

    def __init__(self, loaded: LoadedModel, reuse_prefix: bool = False, speedups: Iterable[str] = SPEEDUPS) -> None:
        self.loaded = loaded
        self.speedups = frozenset(speedups)
        unknown = sorted(self.speedups - set(SPEEDUPS))
        if unknown:
            raise LongreachError(f"unknown decode speedups {unknown}; valid: {', '.join(SPEEDUPS)}")
        self.tokenizer = loaded.tokenizer
        self.eos_ids = _eos_ids(loaded)
        self.prefixes = PrefixCache(reuse_prefix)

    def encode(self, text: str) -> list[int]:
        return tokens.encode(self.tokenizer, text)

    def generate(self, request: Request, stack: MethodStack) -> Generation:
        """Answer one request under ``stack``, measured."""
        device = self.loaded.device
        if device == "cpu":  # torch's default already; the device context would add overhead to every op
            return self._measured(request, stack)
        with torch.device(device), peak_gpu(device) as gpu:  # new tensors (ids, masks, indices) on the GPU
            generation = self._measured(request, stack)
        return dataclasses.replace(generation, peak_gpu_mb=gpu.mb)

    def losses(self, request: LossRequest, stack: MethodStack) -> Losses:
        """Next-token losses over ``request.text`` under ``stack`` (perplexity), measured. Position and attention
        methods apply; a cache method or a reader has no per-token loss to give (refused with the reason)."""
        check_stack(stack)
        ids = self.encode(request.text)
        device = self.loaded.device
        with torch.device(device) if device != "cpu" else contextlib.nullcontext(), peak_gpu(device) as gpu:
            with peak_rss() as peak, torch.inference_mode(), stack.applied(self.loaded):
                start = time.perf_counter()
                nll = token_nll(self.loaded.model, ids, request.window, request.stride)
                if nll.is_cuda:
                    torch.cuda.synchronize(nll.device)
                seconds = time.perf_counter() - start
        return Losses(nll.cpu().tolist(), len(ids), seconds, peak.mb, gpu.mb)

    def _measured(self, request: Request, stack: MethodStack) -> Generation:
        reader = stack.of_kind("reader")
        with peak_rss() as peak:
            if reader is not None:
                generation = reader.read(self, request, stack.without("reader"))
            else:
                generation = self._run(request, stack)
        return dataclasses.replace(generation, peak_rss_mb=peak.mb)

    def _run(self, request: Request, stack: MethodStack) -> Generation:
        prompt_ids = self.encode(request.prompt)
        with torch.inference_mode(), stack.applied(self.loaded):
            start = time.perf_counter()
            read = self.read_prompt(prompt_ids, request, stack)
            generation, cache = self._decode(len(prompt_ids), request, read.logits, read.cache, start, read.reused)
        if stack.of_kind("cache") is None:
            self.prefixes.keep(stack.without("cache").repr, prompt_ids, cache)
        return dataclasses.replace(generation, compressed_kv_bytes=read.compressed_bytes)

    def read_prompt(self, prompt_ids: list[int], request: Request, stack: MethodStack) -> PromptRead:
        """Prefill ``prompt_ids`` under ``stack`` (a cache method compresses what it compresses), continuing a
        kept read where the prefix cache allows. Call it inside ``torch.inference_mode()`` with ``stack``
        applied; the logits of the last prompt token start the answer."""
        method = stack.of_kind("cache")
        base = stack.without("cache")
        split = question_split(self.tokenizer, request, prompt_ids, compressing=method is not None)
        first = prompt_ids if split is None else prompt_ids[:split]
        if method is None:  # a read ending the prompt computes its last token: its logits start the answer
            cap = len(first) - 1 if split is None else len(first)
            reused, cache = self.prefixes.continue_from(base.repr, first, stack.reads_length, cap)
            if reused < len(first):
                logits, cache = self._continue(torch.tensor([first[reused:]]), cache, reused)
        else:
            question = question_start(self.tokenizer, request, prompt_ids) if request.mode == "aware" else None
            reused, cache = self._compressed_read(first, base.repr, method, question)
        compressed_bytes = adapter.cache_bytes(cache)
        if split is not None:
            logits, cache = self._continue(torch.tensor([prompt_ids[split:]]), cache, split)
        return PromptRead(logits, cache, reused, compressed_bytes)

    def _continue(self, ids: torch.Tensor, cache: Any, start: int) -> tuple[torch.Tensor, Any]:
        """:func:`adapter.forward` of ``ids`` (1, t) at ``start`` on top of ``cache``; with the
        ``continued_attention`` speedup, attention over the cache and the new tokens skips the blocks the causal
        mask hides (:func:`~longreach.models.adapter.sdpa.continued_sdpa`)."""
        model = self.loaded.model
        fast = "continued_attention" in self.speedups
        with adapter.continued_read_attention(model) if fast else contextlib.nullcontext():
            return adapter.forward(model, ids, cache, start)

    def _compressed_read(
        self, first: list[int], base: str, method: Method, question: int | None = None
    ) -> tuple[int, Any]:
        """Read ``first`` from position 0 and compress it with ``method``: (reused tokens, compressed cache).
        ``question``: where the question begins in ``first`` when it holds one (question-aware voters).
        With prefix reuse the uncompressed read and its layer inputs are kept, and a copy is compressed."""
        model = self.loaded.model
        ids = torch.tensor([first])
        if not self.prefixes.enabled or method.reads_itself:  # each layer compressed right after it is read
            return 0, method.read(self.loaded, ids, question)
        kept = self.prefixes.exact(base, first)
        reused = len(first)
        if kept is None:
            self.prefixes.drop()  # free the previous read before making a new one
            inputs: list[adapter.LayerInput] = []
            with adapter.after_attention(model, lambda observed, _cache: inputs.append(observed)):
                full = adapter.fill_cache(model, ids)
            self.prefixes.keep(base, first, full, inputs)
            kept, reused = (adapter.clone_cache(full), inputs), 0
        cache, inputs = kept
        for observed in inputs:  # a copy sharing the memo, so the kept inputs stay question-free
            method.compress_layer(dataclasses.replace(observed, question=question), cache, len(inputs))
        return reused, cache

    def complete(
        self, prompt_ids: list[int], request: Request, stack: MethodStack, reused: int = 0, cache: Any = None
    ) -> tuple[Generation, Any]:
        """Prefill ``prompt_ids`` (from token ``reused`` on, on top of ``cache``) under ``stack``, then decode
        greedily (the readers' last step). Returns the generation (peak memory left to the caller) and the
        final cache."""
        ids = torch.tensor([prompt_ids])
        with torch.inference_mode(), stack.applied(self.loaded):
            start = time.perf_counter()
            logits, cache = self._continue(ids[:, reused:], cache, reused)
            return self._decode(len(prompt_ids), request, logits, cache, start, reused)

    def _decode(
        self, prompt_tokens: int, request: Request, logits: torch.Tensor, cache: Any, start: float, reused: int
    ) -> tuple[Generation, Any]:
        """Greedy decoding after a prefill that began at ``start`` (perf_counter) and ended now with ``logits``
        (1, t, vocab) over a cache of ``prompt_tokens`` tokens. Returns the generation and the final cache."""
        if logits.is_cuda:  # kernels run asynchronously: wait for the prefill before reading the clock
            torch.cuda.synchronize(logits.device)
        prefill_seconds = time.perf_counter() - start
        kv_bytes = after_prefill = adapter.cache_bytes(cache)
        answer = AnswerText(self.tokenizer, request.stop, incremental="decode_stream" in self.speedups)
        text: str | None = None
        decode_seconds, decode_steps = 0.0, 0
        model = self.loaded.model
        next_id = int(logits[0, -1].argmax())
        with contextlib.ExitStack() as fast:
            if "packed_attention" in self.speedups:  # see the module docstring
                fast.enter_context(adapter.packed_decode_attention(model))
            if "packed_linears" in self.speedups:
                fast.enter_context(adapter.packed_linears(model))
            if "preallocated_cache" in self.speedups:  # the last id is never read: room for max_new_tokens - 1
                fast.enter_context(adapter.preallocated(cache, request.max_new_tokens - 1))
            while next_id not in self.eos_ids:
                text = answer.add(next_id)
                if text is not None or len(answer.ids) >= request.max_new_tokens:
                    break
                step = time.perf_counter()
                position = prompt_tokens + len(answer.ids) - 1
                logits, cache = adapter.forward(model, torch.tensor([[next_id]]), cache, start=position)
                next_id = int(logits[0, -1].argmax())  # the one read per step: end and stop checks need the id
                decode_seconds += time.perf_counter() - step
                decode_steps += 1
        new_ids = answer.ids
        text = answer.decode() if text is None else text
        kv_bytes = max(kv_bytes, adapter.cache_bytes(cache))
        generation = Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            new_tokens=len(new_ids),
            seconds=time.perf_counter() - start,
            prefill_seconds=prefill_seconds,
            kv_cache_bytes=kv_bytes,
            reused_tokens=reused,
            decode_seconds=decode_seconds,
            decode_steps=decode_steps,
            compressed_kv_bytes=after_prefill,
        )
        return generation, cache


def question_split(tokenizer: Any, request: Request, prompt_ids: list[int], compressing: bool) -> int | None:
    """Tokens read (and, with a cache method, compressed) before the rest of the prompt; None: read at once.
    Question-agnostic: the context's tokens (up to the first id where the context encoded alone differs from the
    prompt); question-aware with a cache method: all but the last token. Peers reading the same ids (the kvpress
    backend) split with this rule too."""
    if request.mode == "agnostic":
        if request.question_offset is None:
            raise LongreachError("question-agnostic evaluation needs the question's offset in the prompt")
        split = _context_tokens(tokenizer, request, prompt_ids)
        if not 1 <= split < len(prompt_ids):
            raise LongreachError(
                f"question-agnostic evaluation needs a non-empty context and question; the context has "
                f"{split} of the prompt's {len(prompt_ids)} tokens"
            )
        return split
    if request.mode != "aware":
        raise LongreachError(f"unknown question mode {request.mode!r}; valid: aware, agnostic")
    return len(prompt_ids) - 1 if compressing and len(prompt_ids) >= 2 else None


def _context_tokens(tokenizer: Any, request: Request, prompt_ids: list[int]) -> int:
    """Prompt tokens of the context: up to the first id where the context encoded alone differs from the prompt."""
    context_ids = tokens.encode(tokenizer, request.prompt[: request.question_offset])
    return next(
        (i for i, (a, b) in enumerate(zip(context_ids, prompt_ids, strict=False)) if a != b),
        min(len(context_ids), len(prompt_ids)),
    )


def question_start(tokenizer: Any, request: Request, prompt_ids: list[int]) -> int | None:
    """The token index where the question begins in a question-aware read (the context's tokens, as the agnostic
    split counts them), or None when the request has no question offset or the question would be empty in the
    read (all but the prompt's last token)."""
    if request.question_offset is None:
        return None
    start = _context_tokens(tokenizer, request, prompt_ids)
    return start if 1 <= start < len(prompt_ids) - 1 else None


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
