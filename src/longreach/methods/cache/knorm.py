"""``knorm``: keep the keys of lowest L2 norm (Devoto et al. 2024, "A Simple and Effective L2 Norm-Based
Strategy for KV Cache Compression", arXiv 2406.11430; kvpress's ``KnormPress``).

Low-norm keys draw high attention in practice, so the highest-norm keys are evicted. Question-agnostic: the
score reads the keys only. Shapes: keys (b, k, n, d) -> scores (b, k, n) = -||key|| in float32.

In chunks (``read_chunk``, opt-in): each chunk's keys compete with the kept ones for the same final budget. Exact: the
rule (a token evicted early had ``kept`` lower-norm keys already, so one read over the same keys would evict it
too). Approximated: the keys themselves, once the tokens read after an eviction saw only the kept ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from longreach.methods.cache.base import EvictingMethod
from longreach.methods.spec import register
from longreach.models import adapter


@register
@dataclass(frozen=True)
class Knorm(EvictingMethod):
    """Evict the tokens whose keys have the largest L2 norm."""

    name: ClassVar[str] = "knorm"
    in_chunks: ClassVar[str] = "exact: the selection rule over the keys seen; approximate: keys read after an eviction"
    summary: ClassVar[str] = "key-norm eviction: keep the tokens whose keys have the lowest L2 norm"
    paper: ClassVar[str] = "Devoto et al. 2024, A Simple and Effective L2 Norm-Based Strategy for KV Cache Compression"
    example: ClassVar[str] = "knorm:compression_ratio=0.5"

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return -torch.linalg.vector_norm(keys, dim=-1, dtype=torch.float32)
