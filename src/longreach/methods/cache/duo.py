"""``duo``: retrieval heads keep the whole cache, the other heads sinks + a recent window (after Xiao et al. 2024,
DuoAttention, arXiv 2410.10819).

DuoAttention splits the KV heads into retrieval heads (full cache) and streaming heads (``sinks`` first tokens +
the ``recent`` last), the split learned offline per model (gates optimized on synthetic passkey data). Here the
ranking comes from a per-read attention probe instead (no trained gates or weights are downloaded, and the MoA
profile belongs to the attention methods, which a cache method does not import): each KV head's score is the
attention mass the probe queries (the last ``window``; the question's tokens with ``voters=question`` in a
question-aware read) put on the middle tokens, those neither sinks nor recent, averaged over the window and over
the head's query group. A head looking far back is a retrieval head.

Budget, per layer (the paper ranks heads over all layers; a cache method sees one layer at a time): the same total
as uniform eviction, k x ``kept(n)`` tokens. With S = sinks + recent, ``R = floor((k kept - k S) / (n - S))`` top
heads keep all n tokens, and the rest of the budget lengthens the streaming heads' recent windows equally (the
first heads in rank order take the remainder), so the total is exact. When k x S exceeds the budget no head is a
retrieval head and every head keeps ``kept`` tokens as sinks + recent. Stored per head (:mod:`._ragged`): the
physical bytes are exactly the tokens kept.

Shapes: probe attention (b, h, w, n) -> middle mass (b, h) -> per KV head (b, k) -> per-head indices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from longreach.methods.cache._ragged import ragged_kernel, store_per_head
from longreach.methods.cache.base import EvictingMethod, per_kv_head, window_attention
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel


def duo_allocation(n: int, kept: int, heads: int, window: int) -> tuple[int, list[int]]:
    """(retrieval heads R, tokens kept by each of the ``heads - R`` streaming heads, in rank order) for a layer of
    ``n`` tokens whose budget is ``heads x kept``, streaming windows at least ``window`` = sinks + recent."""
    total = heads * kept
    window = min(window, n)
    if window >= n or total < heads * window:
        return 0, [kept] * heads
    retrieval = min(heads, (total - heads * window) // (n - window))
    streaming = heads - retrieval
    if not streaming:
        return retrieval, []
    spare = total - retrieval * n
    return retrieval, [spare // streaming + (i < spare % streaming) for i in range(streaming)]


@register
@dataclass(frozen=True)
class Duo(EvictingMethod):
    """Retrieval heads keep everything, streaming heads sinks + recent (DuoAttention's split, probed per read)."""

    sinks: int = field(default=64, metadata={"help": "first tokens every streaming head keeps"})
    recent: int = field(default=256, metadata={"help": "last tokens every streaming head keeps (at least)"})
    window: int = field(default=32, metadata={"help": "probe: the last tokens whose attention ranks the heads"})
    voters: Literal["window", "question"] = field(
        default="window", metadata={"help": "probe queries: the last window | the question's tokens"}
    )

    name: ClassVar[str] = "duo"
    summary: ClassVar[str] = "DuoAttention-style: retrieval heads (attention probe) keep all, others sinks + recent"
    paper: ClassVar[str] = (
        "Xiao et al. 2024, DuoAttention: Efficient Long-Context LLM Inference with Retrieval and Streaming Heads"
    )
    example: ClassVar[str] = "duo:compression_ratio=0.5:sinks=4:recent=32"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.sinks >= 0 and self.recent >= 1, f"duo: sinks >= 0, recent >= 1; got {self.sinks}, {self.recent}")
        require(self.window >= 1, f"duo: window must be >= 1 token; got {self.window}")
        require(self.bits == 16, f"duo: per-head budgets keep the model dtype (bits=16); got bits={self.bits}")

    def head_ranking(self, observed: adapter.LayerInput, keys: torch.Tensor) -> torch.Tensor:
        """KV heads (b, k) scored by the probe's attention mass on the middle tokens (higher: retrieval)."""
        n = keys.shape[2]
        window = n - observed.question if self.voters == "question" and observed.question is not None else self.window
        window = min(window, n - 1)
        attention = window_attention(observed, keys, window).mean(dim=-2)  # (b, h, n)
        middle = attention[..., self.sinks : max(self.sinks, n - self.recent)].sum(dim=-1, keepdim=True)
        return per_kv_head(middle, keys.shape[1])[..., 0]

    def head_indices(
        self, observed: adapter.LayerInput, keys: torch.Tensor, n_layers: int
    ) -> list[torch.Tensor] | None:
        n, heads = keys.shape[2], keys.shape[1]
        kept = self.kept(n, observed.layer, n_layers)
        if kept >= n:
            return None
        retrieval, streaming = duo_allocation(n, kept, heads, self.sinks + self.recent)
        order = self.head_ranking(observed, keys)[0].argsort(descending=True).tolist()
        everything = torch.arange(n, device=keys.device)
        indices: list[torch.Tensor] = [everything] * heads
        for rank, head in enumerate(order[retrieval:]):
            sinks = min(self.sinks, streaming[rank])
            indices[head] = torch.cat((everything[:sinks], everything[n - (streaming[rank] - sinks) :]))
        return indices

    def compress_layer(self, observed: adapter.LayerInput, cache: Any, n_layers: int) -> None:
        keys, values = adapter.layer_kv(cache, observed.layer)
        kept = self.head_indices(observed, keys, n_layers)
        if kept is not None:
            store_per_head(cache, observed.layer, keys, values, kept)

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        with adapter.attention_kernel(loaded.model, ragged_kernel):
            yield
