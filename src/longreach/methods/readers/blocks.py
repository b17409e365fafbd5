"""Per-head block retrieval: one block reader with two variants, ``longheads`` and ``landmark_analogue``.

Ein legend: b batch (1), h query heads, k kv heads, g = h/k, w block (chunk) size, C complete blocks,
S selected blocks per head, n tokens so far, t tokens in a query block, d head dim.

The sequence is cut into blocks of ``w`` tokens. While everything fits in ``slots`` blocks, attention is
the model's own. Past that, every query block (the w queries of one block) and every query head attends to
``slots`` blocks: the first (sink), the previous, its own, and the ``slots - 3`` earlier blocks whose
summary vector scores highest against the head's mean (pre-RoPE) query of the block. The chosen blocks are
laid out in their original order at contiguous positions 0 .. slots*w, so every relative distance stays
inside the trained window; keys are cached before rotation and rotated per call.

Summaries (one per block and query head, (h, C, d)):
  ``mean``: the mean pre-RoPE key of the block (the training-free landmark analogue);
  ``pooled``: LongHeads' attention-pooled chunk key (Lu et al. 2024; reference code LuLuLuyi/LongHeads):
      o = softmax(q k^T / sqrt(d)) v, bidirectional within the block (every token of the block attends to every
      other, local RoPE positions 0..w-1), m = mean_j o_j, summary = sum_j softmax_j(m . k_j / sqrt(d)) k_j.
Selection: ``block`` (default) chooses once per query block by the block's mean query (the vectorised form
methods.md suggests; one retrieval per block and layer); ``token`` chooses per query as the reference does (exact;
prefill then runs one retrieval per token and layer, about ``block`` times more kernel calls). Decoding reads one
token a step, so both choose per token there.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import torch

from longreach.generation import Generation, Request
from longreach.methods.attention.kernels import attention_with_lse
from longreach.methods.base import Method
from longreach.methods.readers.base import ReaderMethod, ReadingEngine
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.methods.spec import MethodStack

Summary = Literal["mean", "pooled"]
Selection = Literal["block", "token"]


@dataclass
class _LayerState:
    summaries: list[torch.Tensor] = field(default_factory=list)  # one (h, d) tensor per complete block
    pending_queries: list[torch.Tensor] = field(default_factory=list)  # (h, 1, d) of an incomplete block


@dataclass
class BlockRetrieval:
    """State and kernel for one sequence (a new instance per request)."""

    block: int
    slots: int
    summary: Summary
    select: Selection = "block"
    layers: dict[int, _LayerState] = field(default_factory=dict)

    def kernel(self, call: adapter.AttentionCall, inner: object) -> torch.Tensor:
        """Attention output (b, t, h, d) of ``call``'s queries; updates the cache with pre-RoPE keys."""
        key, value = call.key, call.value
        if call.cache is not None:
            key, value = call.cache.update(key, value, call.layer)
        state = self.layers.setdefault(call.layer, _LayerState())
        outputs = []
        for start, stop in self._spans(call.positions):
            outputs.append(self._span(call, state, key, value, start, stop))
        return torch.cat(outputs, dim=1)

    def _spans(self, positions: torch.Tensor) -> list[tuple[int, int]]:
        """Query ranges that share one selection: a block's queries, or (``select="token"``) each query past the
        first ``slots`` blocks on its own (the reference's per-token rule; prefill then costs one retrieval per
        token and layer instead of one per block)."""
        spans = _aligned_spans(positions, self.block)
        if self.select == "block":
            return spans
        split: list[tuple[int, int]] = []
        for start, stop in spans:
            if int(positions[start]) // self.block < self.slots:  # still the model's own attention
                split.append((start, stop))
            else:
                split.extend((i, i + 1) for i in range(start, stop))
        return split

    def _span(
        self,
        call: adapter.AttentionCall,
        state: _LayerState,
        key: torch.Tensor,
        value: torch.Tensor,
        start: int,
        stop: int,
    ) -> torch.Tensor:
        """Queries start..stop (indices into the call) lie in one block; returns (b, t, h, d)."""
        positions = call.positions[start:stop]
        first, last = int(positions[0]), int(positions[-1])
        query = call.query[:, :, start:stop]
        current = first // self.block
        if current < self.slots:  # everything still fits: the model's own attention
            keys = call.rotate(key[:, :, : last + 1], torch.arange(last + 1))
            output = _causal_attention(call, call.rotate(query, positions), keys, value[:, :, : last + 1], positions)
        else:
            output = self._retrieve(call, state, query, key, value, positions, current)
        self._track(call, state, query, key, value, positions, current)
        return output

    def _retrieve(
        self,
        call: adapter.AttentionCall,
        state: _LayerState,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        positions: torch.Tensor,
        current: int,
    ) -> torch.Tensor:
        w, heads = self.block, query.shape[1]
        summaries = torch.stack(state.summaries[1 : current - 1], dim=1)  # (h, C', d): candidates
        mean_query = query[0].float().mean(dim=1)  # (h, d)
        scores = torch.einsum("hd,hcd->hc", mean_query, summaries.float())
        chosen = torch.topk(scores, min(self.slots - 3, scores.shape[1]), dim=1).indices.sort(dim=1).values + 1
        blocks = torch.cat(
            (torch.zeros(heads, 1, dtype=torch.long), chosen, torch.full((heads, 1), current - 1, dtype=torch.long)),
            dim=1,
        )  # (h, S)
        chosen_tokens = (blocks[:, :, None] * w + torch.arange(w)).reshape(heads, -1)  # (h, S*w)
        own = torch.arange(current * w, int(positions[-1]) + 1).expand(heads, -1)  # (h, t'): the current block
        index = torch.cat((chosen_tokens, own), dim=1)  # (h, S*w + t'): only these rows are copied
        kv_head = (torch.arange(heads) // call.groups)[:, None]
        gathered_k, gathered_v = key[0][kv_head, index][None], value[0][kv_head, index][None]
        slots_used = blocks.shape[1]
        key_positions = torch.arange(gathered_k.shape[2])
        query_positions = slots_used * w + (positions - current * w)
        rotated_k = call.rotate(gathered_k, key_positions)
        rotated_q = call.rotate(query, query_positions)
        return _causal_attention(call, rotated_q, rotated_k, gathered_v, query_positions, expanded=True)

    def _track(
        self,
        call: adapter.AttentionCall,
        state: _LayerState,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        positions: torch.Tensor,
        current: int,
    ) -> None:
        """Summarise every block this span completes."""
        state.pending_queries.append(query[0])
        if (int(positions[-1]) + 1) % self.block:
            return
        queries = torch.cat(state.pending_queries, dim=1)  # (h, w, d)
        state.pending_queries = []
        start = current * self.block
        block_keys = key[0, :, start : start + self.block]  # (k, w, d)
        block_values = value[0, :, start : start + self.block]
        state.summaries.append(self._summarise(call, queries, block_keys, block_values))

    def _summarise(
        self, call: adapter.AttentionCall, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """(h, d) summary of one block."""
        keys = keys.repeat_interleave(call.groups, dim=0)  # (h, w, d)
        if self.summary == "mean":
            return keys.mean(dim=1)
        local = torch.arange(self.block)
        q = call.rotate(queries[None], local)[0].float()
        k = call.rotate(keys[None], local)[0].float()
        scores = (q @ k.transpose(-1, -2)) * call.scaling  # (h, w, w): every token of the block sees every other
        local_out = scores.softmax(-1) @ values.repeat_interleave(call.groups, dim=0).float()  # (h, w, d)
        pooled = local_out.mean(dim=1)  # (h, d)
        weights = (torch.einsum("hd,hwd->hw", pooled, k) * call.scaling).softmax(-1)
        return torch.einsum("hw,hwd->hd", weights, k).to(keys.dtype)


def _aligned_spans(positions: torch.Tensor, block: int) -> list[tuple[int, int]]:
    """Split a call's queries where they cross a block boundary: [(start, stop)] index ranges."""
    spans, start = [], 0
    blocks = (positions // block).tolist()
    for i in range(1, len(blocks) + 1):
        if i == len(blocks) or blocks[i] != blocks[start]:
            spans.append((start, i))
            start = i
    return spans


def _causal_attention(
    call: adapter.AttentionCall,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    query_positions: torch.Tensor,
    expanded: bool = False,
) -> torch.Tensor:
    """Attention of query (b, h, t, d) at ``query_positions`` over keys at positions 0..n-1; (b, t, h, d)."""
    if not expanded:
        key = key.repeat_interleave(call.groups, dim=1)
        value = value.repeat_interleave(call.groups, dim=1)
    mask = torch.arange(key.shape[2])[None, :] <= query_positions[:, None]
    output, _ = attention_with_lse(query, key, value, mask, call.scaling)
    return output.transpose(1, 2)


def read_with_blocks(
    engine: ReadingEngine, request: Request, inner: MethodStack, retrieval: BlockRetrieval, segment: int
) -> Generation:
    """Prefill the prompt ``segment`` tokens at a time with block retrieval attention, then decode.
    A prompt that fits in ``slots`` blocks goes to the plain model (identical answers)."""
    prompt_ids = engine.encode(request.prompt)
    if len(prompt_ids) <= retrieval.slots * retrieval.block:
        return engine.complete(prompt_ids, request, inner)[0]
    model = engine.loaded.model
    cache = adapter.empty_cache(model)
    start_time = time.perf_counter()
    with adapter.attention_kernel(model, retrieval.kernel):
        with torch.inference_mode(), inner.applied(engine.loaded):
            for start in range(0, len(prompt_ids) - 1, segment):
                stop = min(start + segment, len(prompt_ids) - 1)
                adapter.forward(model, torch.tensor([prompt_ids[start:stop]]), cache, start=start)
        prefill = time.perf_counter() - start_time
        generation, _ = engine.complete(prompt_ids, request, inner, reused=len(prompt_ids) - 1, cache=cache)
    return dataclasses.replace(
        generation,
        seconds=time.perf_counter() - start_time,
        prefill_seconds=prefill + generation.prefill_seconds,
        reused_tokens=0,
    )


@dataclass(frozen=True)
class BlockReader(ReaderMethod):
    """Per-head top-k block retrieval; the variants differ in how a block is summarised (``summary_kind``)."""

    block: int = field(default=256, metadata={"help": "block (chunk) size in tokens"})
    blocks: int = field(default=16, metadata={"help": "blocks each head reads (incl. sink, previous, current)"})
    segment: int = field(default=4096, metadata={"help": "prefill tokens per forward (a multiple of block)"})
    select: Selection = field(
        default="block", metadata={"help": "block: one choice per query block | token: per query (slower prefill)"}
    )

    summary_kind: ClassVar[Summary] = "mean"

    def __post_init__(self) -> None:
        require(self.block >= 1 and self.blocks >= 3, f"{self.name}: need block >= 1 and blocks >= 3")
        require(self.segment % self.block == 0, f"{self.name}: segment must be a multiple of block ({self.block})")

    def conflict_with(self, other: Method) -> str | None:
        return "both replace the attention kernel" if other.kind == "attention" else super().conflict_with(other)

    def read(self, engine: ReadingEngine, request: Request, inner: MethodStack) -> Generation:
        retrieval = BlockRetrieval(self.block, self.blocks, self.summary_kind, self.select)
        return read_with_blocks(engine, request, inner, retrieval, self.segment)


@register
@dataclass(frozen=True)
class LongHeads(BlockReader):
    """LongHeads (Lu et al. 2024, "LongHeads: Multi-Head Attention is Secretly a Long Context Processor", arXiv
    2402.10685): every head reads its own chosen chunks within the trained length, chunks summarised by
    attention-pooled keys."""

    name: ClassVar[str] = "longheads"
    example: ClassVar[str] = "longheads:block=32:blocks=6:segment=128"
    summary: ClassVar[str] = "LongHeads: each head attends to its top chunks, positions within the window"
    paper: ClassVar[str] = "Lu et al. 2024, LongHeads"
    summary_kind: ClassVar[Summary] = "pooled"


@register
@dataclass(frozen=True)
class LandmarkAnalogue(BlockReader):
    """A training-free analogue of Landmark Attention (Mohtashami & Jaggi 2023, arXiv 2305.16300), not the method
    itself: the paper trains a landmark token per block whose attention gates the block; here a block is represented
    by the mean of the model's own keys and chosen per head by its score against the mean query. The trained
    version needs the trainer (issue 15) and comes with it."""

    name: ClassVar[str] = "landmark_analogue"
    example: ClassVar[str] = "landmark_analogue:block=32:blocks=6:segment=128"
    summary: ClassVar[str] = "a training-free analogue of Landmark Attention: blocks chosen by their mean keys"
    paper: ClassVar[str] = "Mohtashami & Jaggi 2023, Landmark Attention"
    summary_kind: ClassVar[Summary] = "mean"
