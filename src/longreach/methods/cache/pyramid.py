"""``pyramid``: layer-varying budgets, large in the first layers and small in the last (Cai et al. 2024,
PyramidKV, arXiv 2406.02069), with SnapKV's scores inside each layer.

The budgets fall linearly from layer 0 to the last layer and average to the same total as a uniform
``compression_ratio``, by KVCache-Factory's formula as kvpress's ``PyramidKVPress`` uses it:
``C = w + n (1 - ratio)``, ``min = (C - w) / beta``, ``max = 2 (C - w) - min`` (capped at n - w, then min
re-balanced), layer l keeps ``round(max - l (max - min) / (L - 1))``; when the pyramid cannot be built the
layer keeps ``round(n (1 - ratio))`` (SnapKV's count). Layers then hold different numbers of tokens.
``voters`` and ``group`` are SnapKV's (question-only voting, max over a KV head's query heads).
In chunks (``read_chunk``, opt-in): SnapKV's chunked reading, each layer evicting to its pyramid budget of the whole
read after every chunk (each layer attends with its own mask, since the layers hold different numbers of tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from longreach.methods.cache.base import EvictingMethod
from longreach.methods.cache.snapkv import snapkv_scores
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require


@register
@dataclass(frozen=True)
class Pyramid(EvictingMethod):
    """SnapKV selection with a pyramid of per-layer budgets."""

    window: int = field(default=64, metadata={"help": "observation window (SnapKV) and the pyramid's floor"})
    kernel: int = field(default=5, metadata={"help": "pooling width along the sequence (odd)"})
    pooling: Literal["avg", "max"] = field(default="avg", metadata={"help": "avg | max pooling of the votes"})
    beta: int = field(default=20, metadata={"help": "steepness: the last layer keeps ~1/beta of the mean budget"})
    voters: Literal["window", "question"] = field(
        default="window", metadata={"help": "window: the last tokens vote | question: the question's tokens vote"}
    )
    group: Literal["mean", "max"] = field(default="mean", metadata={"help": "mean | max over a KV head's query heads"})

    name: ClassVar[str] = "pyramid"
    in_chunks: ClassVar[str] = "as snapkv's, with each layer's pyramid budget of the whole read"
    summary: ClassVar[str] = "PyramidKV: SnapKV selection with budgets falling linearly from the first layer"
    paper: ClassVar[str] = "Cai et al. 2024, PyramidKV: Dynamic KV Cache Compression based on Pyramidal Funneling"
    example: ClassVar[str] = "pyramid:compression_ratio=0.5:window=8"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(not self.budget, "pyramid: give compression_ratio (the pyramid spreads a ratio over layers)")
        require(self.window >= 1, f"pyramid: window must be >= 1 token; got {self.window}")
        require(self.kernel >= 1 and self.kernel % 2 == 1, f"pyramid: kernel must be odd and >= 1; got {self.kernel}")
        require(self.beta >= 1, f"pyramid: beta must be >= 1; got {self.beta}")

    def kept(self, n: int, layer: int = 0, n_layers: int = 1) -> int:
        if self.compression_ratio == 0.0:
            return n
        keep = 1.0 - self.compression_ratio
        capacity = self.window + n * keep
        low = (capacity - self.window) / self.beta
        high = (capacity - self.window) * 2 - low
        if high >= n - self.window:
            high = n - self.window
            low = (capacity - self.window) * 2 - high
        if not n >= high >= low >= self.window:
            return max(1, round(n * keep))
        step = (high - low) / (n_layers - 1) if n_layers > 1 else 0.0
        return round(high - layer * step)

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return snapkv_scores(observed, keys, self.window, self.kernel, self.pooling, self.voters, self.group)
