"""``adakv``: head-wise budgets (Feng et al. 2024, Ada-KV, arXiv 2407.11550) over SnapKV's scores.

A layer's budget (k x ``kept(n)`` tokens, the same total as a uniform method) is spread over its KV heads by
their score distribution: the top ``k x kept`` scores over all heads' scores flattened, after a per-head floor
(each head first keeps its ``int(floor x kept)`` best tokens, at least 1; kvpress's ``alpha_safeguard``, 0.2). A
head whose attention is concentrated gives its share to heads whose attention is spread. Scores are SnapKV's
(every option of ``snapkv``: ``voters=question``, ``group=max``, ``pooling``...), comparable across heads since
each head's votes are softmax means summing to one; the voters' own tokens score highest in every head.

Evicted per head for real: the layer stores one tensor per KV head (:mod:`._ragged`), so the physical bytes are
exactly the tokens kept (k x kept(n) per layer, as uniform eviction at the same ratio), and attention on those
layers runs head by head through a kernel the method installs while applied. kvpress's ``AdaKVPress`` keeps the
full cache and masks the evicted tokens (no bytes freed). ``bits`` is refused (per-head storage is not quantized).

Shapes: scores (b, k, n) -> flattened (b, k n) -> per head h ascending indices (m_h,), sum m_h = k x kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from longreach.methods.cache._ragged import ragged_kernel, store_per_head
from longreach.methods.cache.snapkv import SnapKV
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel


def headwise_topk(scores: torch.Tensor, kept: int, floor: float) -> list[torch.Tensor]:
    """Ada-KV's allocation: per KV head, the ascending indices it keeps (batch 1), k x ``kept`` in total.
    scores (1, k, n); each head keeps at least its ``max(1, int(floor x kept))`` best tokens when floor > 0."""
    _, k, n = scores.shape
    scores = scores.clone()
    if floor > 0:
        safe = max(1, int(kept * floor))
        scores.scatter_(-1, scores.topk(safe, dim=-1).indices, torch.finfo(scores.dtype).max)
    flat = scores.reshape(-1).topk(k * kept).indices
    heads, positions = flat // n, flat % n
    return [positions[heads == h].sort().values for h in range(k)]


@register
@dataclass(frozen=True)
class AdaKV(SnapKV):
    """SnapKV scores with Ada-KV's head-wise budgets (per-head eviction, exact physical bytes)."""

    floor: float = field(default=0.2, metadata={"help": "fraction of the per-head budget every head keeps at least"})

    name: ClassVar[str] = "adakv"
    in_chunks: ClassVar[str] = ""  # not SnapKV's: its choice is made once over the whole read
    summary: ClassVar[str] = "Ada-KV: a layer's budget spread over KV heads by their SnapKV scores (per-head eviction)"
    paper: ClassVar[str] = "Feng et al. 2024, Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation"
    example: ClassVar[str] = "adakv:compression_ratio=0.5:window=16"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.floor <= 1.0, f"adakv: floor must be in [0, 1]; got {self.floor}")
        require(self.bits == 16, f"adakv: per-head budgets keep the model dtype (bits=16); got bits={self.bits}")

    def head_indices(
        self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor, n_layers: int
    ) -> list[torch.Tensor] | None:
        """Ascending indices each KV head keeps; None when the layer keeps everything."""
        n = keys.shape[2]
        kept = self.kept(n, observed.layer, n_layers)
        if kept >= n:
            return None
        return headwise_topk(self.scores(observed, keys, values), kept, self.floor)

    def compress_layer(self, observed: adapter.LayerInput, cache: Any, n_layers: int) -> None:
        keys, values = adapter.layer_kv(cache, observed.layer)
        kept = self.head_indices(observed, keys, values, n_layers)
        if kept is not None:
            store_per_head(cache, observed.layer, keys, values, kept)

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        with adapter.attention_kernel(loaded.model, ragged_kernel):
            yield
