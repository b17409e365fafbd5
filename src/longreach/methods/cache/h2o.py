"""``h2o``: heavy hitters by accumulated attention plus a recent window (Zhang et al. 2023, H2O, arXiv 2306.14048).

Every key's score is the attention it received from every query of the prefill (computed here in query
blocks from the queries and cached keys: no eager attention and no (n, n) matrix), optionally divided by the
number of queries that could see it (``normalize``; early keys are otherwise favoured because more queries see
them), averaged over each KV head's query group. The most recent ``recent`` fraction of the budget is kept as a
window, the rest goes to the highest scores. ``recent=0:normalize=true`` is kvpress's ``ObservedAttentionPress``.
One-shot at the end of the prefill, as kvpress; the paper also evicts while decoding.

Shapes: queries (b, h, n, d), keys (b, k, n, d) -> attention mass (b, h, n) -> scores (b, k, n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from longreach.methods.cache.base import EvictingMethod, attention_mass, per_kv_head
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require


@register
@dataclass(frozen=True)
class H2O(EvictingMethod):
    """Heavy hitters (accumulated attention) plus the most recent tokens."""

    recent: float = field(default=0.5, metadata={"help": "fraction of the kept tokens reserved for the most recent"})
    normalize: bool = field(default=True, metadata={"help": "divide by the number of queries that saw each key"})

    name: ClassVar[str] = "h2o"
    summary: ClassVar[str] = "H2O: keep heavy hitters (accumulated attention) and a recent window"
    paper: ClassVar[str] = "Zhang et al. 2023, H2O: Heavy-Hitter Oracle for Efficient Generative Inference of LLMs"
    example: ClassVar[str] = "h2o:compression_ratio=0.5"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 <= self.recent <= 1.0, f"h2o: recent must be in [0, 1]; got {self.recent}")

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        n = keys.shape[2]
        if observed.hidden.shape[1] != n:
            raise ValueError(
                f"h2o scores the tokens of one prefill; the cache holds {n}, the forward read "
                f"{observed.hidden.shape[1]}"
            )
        mass = attention_mass(observed, keys)  # shared: not modified below
        if self.normalize:
            mass = mass / torch.arange(n, 0, -1, device=keys.device, dtype=torch.float32)
        scores = per_kv_head(mass, keys.shape[1])
        window = int(self.kept(n) * self.recent)
        if window:
            scores[..., n - window :] = float(scores.max()) + 1.0
        return scores
