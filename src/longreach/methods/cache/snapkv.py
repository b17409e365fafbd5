"""``snapkv``: observation-window voting with pooling (Li et al. 2024, SnapKV, arXiv 2404.14469).

At the end of the prefill, the last ``window`` queries vote for the earlier keys with their attention
(softmax over all keys, float32), votes are averaged over the window, smoothed along the sequence with a
``kernel``-wide pool (keeps the neighbours of a hit: whole facts rather than single tokens), averaged over
each KV head's query group (GQA), and the top keys are kept together with the window itself.
Query-aware: the question must be inside the window, i.e. read before compression.

Shapes: window queries (b, h, w, d) x keys (b, k, n, d) -> attention (b, h, w, n) -> votes (b, h, n - w)
-> pooled, grouped (b, k, n - w) -> scores (b, k, n) with the window on top.
Same scores as kvpress's ``SnapKVPress`` (its defaults: window 64, kernel 5, average pooling).

Question-only voting (``voters=question``): the voters are the question's tokens instead of the last ``window``
(the engine marks where the question begins in a question-aware read, ``LayerInput.question``), so the template
and context tokens just before the question do not vote; in a read without a question (question-agnostic) the
last ``window`` vote. ``group=max`` takes the max over a KV head's query heads instead of the mean: a token one
query head needs is kept. ``snapkv:voters=question:group=max:pooling=max:kernel=7`` is the question-aware setting.

In chunks (``read_chunk``, opt-in): after every chunk the last ``window`` tokens of that chunk vote over the kept tokens
and the chunk's (the question's tokens of the chunk with ``voters=question``). Exact: the final vote is cast by the
same voters as a one-shot read's (the last window, or the question's tokens when the last chunk holds them all).
Approximated: the earlier evictions follow voters that are not the final ones, and every token read after an
eviction (voters included) attended only to the kept tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from longreach.methods.cache.base import EvictingMethod, per_kv_head, window_attention
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require


def snapkv_scores(
    observed: adapter.LayerInput,
    keys: torch.Tensor,
    window: int,
    kernel: int,
    pooling: str,
    voters: str = "window",
    group: str = "mean",
) -> torch.Tensor:
    """SnapKV votes (b, k, n): pooled mean attention of the voters (the last ``window`` queries, or the question's
    when ``voters="question"`` and the read holds one); the voters' own tokens score highest."""
    n = keys.shape[2]
    if voters == "question" and observed.question is not None:
        window = n - observed.question
    window = min(window, n - 1, observed.hidden.shape[1])  # the voters are tokens of this read (a chunk's own)
    votes = window_attention(observed, keys, window)[..., : n - window].mean(dim=-2)
    pool = F.avg_pool1d if pooling == "avg" else F.max_pool1d
    votes = pool(votes, kernel_size=kernel, padding=kernel // 2, stride=1)
    votes = per_kv_head(votes, keys.shape[1], group)
    return F.pad(votes, (0, window), value=float(votes.max()) + 1.0)


@register
@dataclass(frozen=True)
class SnapKV(EvictingMethod):
    """Keep the keys the observation window attends to most (plus the window)."""

    window: int = field(default=64, metadata={"help": "observation window: the last tokens whose queries vote"})
    kernel: int = field(default=5, metadata={"help": "pooling width along the sequence (odd)"})
    pooling: Literal["avg", "max"] = field(default="avg", metadata={"help": "avg | max pooling of the votes"})
    voters: Literal["window", "question"] = field(
        default="window", metadata={"help": "window: the last tokens vote | question: the question's tokens vote"}
    )
    group: Literal["mean", "max"] = field(default="mean", metadata={"help": "mean | max over a KV head's query heads"})

    name: ClassVar[str] = "snapkv"
    in_chunks: ClassVar[str] = (
        "exact: the last vote's voters; approximate: earlier evictions, every later token's context"
    )
    summary: ClassVar[str] = "SnapKV: the last window's queries vote (pooled attention) for the keys to keep"
    paper: ClassVar[str] = "Li et al. 2024, SnapKV: LLM Knows What You are Looking for Before Generation"
    example: ClassVar[str] = "snapkv:compression_ratio=0.5:window=16"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.window >= 1, f"snapkv: window must be >= 1 token; got {self.window}")
        require(self.kernel >= 1 and self.kernel % 2 == 1, f"snapkv: kernel must be odd and >= 1; got {self.kernel}")

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return snapkv_scores(observed, keys, self.window, self.kernel, self.pooling, self.voters, self.group)
