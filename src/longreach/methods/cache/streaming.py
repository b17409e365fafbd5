"""``streaming``: attention sinks + a recent window (Xiao et al. 2023, StreamingLLM, arXiv 2309.17453).

Keeps the first ``sinks`` tokens of the prefill and the most recent ``kept - sinks``; the middle is evicted.
Kept keys keep their original RoPE positions (kvpress's ``StreamingLLMPress`` without its re-rotation
wrapper); the paper re-assigns positions by cache slot, which matters only past the native window.
In chunks (``read_chunk``, opt-in): every chunk is read over the sinks and the recent tokens kept so far, the reading
the paper itself describes. Exact: the kept positions (the sinks and the last ``kept - sinks``, as one read keeps
them). Approximated: the keys and values of the tokens read after the first eviction (they saw only the kept ones).
Shapes: keys (b, k, n, d) -> scores (b, k, n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from longreach.methods.cache.base import EvictingMethod
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require


@register
@dataclass(frozen=True)
class Streaming(EvictingMethod):
    """Sinks + recent window at a compression ratio or a token budget."""

    sinks: int = field(default=4, metadata={"help": "first tokens always kept (attention sinks)"})

    name: ClassVar[str] = "streaming"
    in_chunks: ClassVar[str] = "exact: the kept positions; approximate: the keys and values read after an eviction"
    summary: ClassVar[str] = "StreamingLLM: keep the first sink tokens and the most recent ones, evict the middle"
    paper: ClassVar[str] = "Xiao et al. 2023, Efficient Streaming Language Models with Attention Sinks"
    example: ClassVar[str] = "streaming:compression_ratio=0.5"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.sinks >= 0, f"streaming: sinks must be >= 0; got {self.sinks}")

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        b, k, n, _ = keys.shape
        position = torch.arange(n, device=keys.device, dtype=torch.float32)
        recency = position / n  # later tokens score higher ...
        recency[: self.sinks] = 2.0  # ... and the sinks highest of all
        return recency.expand(b, k, n)
