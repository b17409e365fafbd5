"""``chunkkv``: keep or drop whole chunks of tokens (Liu et al. 2025, ChunkKV, arXiv 2502.00299), over SnapKV's
scores.

The cached tokens are cut into fixed ``chunk``-token pieces from the start (the last may be shorter); a chunk's
score is the mean over its tokens of their SnapKV scores summed over the KV heads (kvpress's ``ChunkKVPress``
rule: every head keeps the same chunks, so a fact is kept whole or not at all). Chunks are kept in score order
until the layer's budget ``kept(n)`` is met; the last chunk taken is cut to its best tokens so that the cache holds
exactly the budget (kvpress keeps ``int(chunks x (1 - ratio))`` whole chunks instead, a few tokens off the
ratio). Every option of ``snapkv`` applies (``voters=question``, ``group=max``...); the voters' tokens score highest,
so their chunks are kept first. Not done: the paper's sentence-level chunks and its layer-wise index reuse.

Shapes: scores (b, k, n) -> summed over heads (b, n) -> chunk means (b, c) -> indices (b, k, kept), shared by heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from longreach.methods.cache.snapkv import SnapKV
from longreach.methods.spec import register
from longreach.params import require


def chunk_selection(scores: torch.Tensor, kept: int, chunk: int) -> torch.Tensor:
    """Ascending indices (b, k, kept), the same for every head: whole chunks by mean score, the last one cut to its
    best tokens. scores (b, k, n)."""
    b, k, n = scores.shape
    token = scores.sum(dim=1)  # (b, n)
    chunks = -(-n // chunk)
    padded = F.pad(token, (0, chunks * chunk - n))
    counts = torch.full((chunks,), chunk, device=scores.device)
    counts[-1] = n - (chunks - 1) * chunk
    means = padded.reshape(b, chunks, chunk).sum(dim=-1) / counts
    # rank every token by (its chunk's rank, its own score): taking the first ``kept`` takes whole chunks in order
    chunk_rank = means.argsort(dim=-1, descending=True).argsort(dim=-1)  # (b, chunks)
    token_rank = chunk_rank.repeat_interleave(chunk, dim=-1)[:, :n].float()
    within = token.argsort(dim=-1, descending=True).argsort(dim=-1).float() / (n + 1)  # in [0, 1): ties inside chunk
    order = (token_rank + within).argsort(dim=-1)[:, :kept].sort(dim=-1).values
    return order.unsqueeze(1).expand(b, k, kept)


@register
@dataclass(frozen=True)
class ChunkKV(SnapKV):
    """SnapKV scores, kept or dropped by whole chunks (every head keeps the same tokens)."""

    chunk: int = field(default=20, metadata={"help": "tokens per chunk (kvpress's chunk_length)"})

    name: ClassVar[str] = "chunkkv"
    in_chunks: ClassVar[str] = ""  # not SnapKV's: its choice is made once over the whole read
    summary: ClassVar[str] = "ChunkKV: SnapKV scores averaged over fixed-size chunks; whole chunks kept or dropped"
    paper: ClassVar[str] = (
        "Liu et al. 2025, ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM Inference"
    )
    example: ClassVar[str] = "chunkkv:compression_ratio=0.5:window=16:chunk=10"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.chunk >= 1, f"chunkkv: chunk must be >= 1 token; got {self.chunk}")

    def choose(self, scores: torch.Tensor, kept: int) -> torch.Tensor:
        return chunk_selection(scores, kept, self.chunk)
