"""``expected``: score keys by the attention future queries are expected to pay them (Devoto et al. 2025,
"Expected Attention: KV Cache Compression by Estimating Attention from Future Queries Distribution";
kvpress's ``ExpectedAttentionPress``, ported with its defaults).

Question-agnostic: no query of the question is needed. Per layer, the pre-RoPE queries of the read (its first
``sinks`` tokens left out) give a mean mu and covariance S per query head; RoPE over the next ``future`` positions
(after the read) is averaged into one matrix R, and mu, S become R mu and R S R^T. For a Gaussian query
q ~ N(mu, S), E[exp(q.k / sqrt d)] = exp(mu.k / sqrt d + k^T S k / 2d); the scores are the softmax of that
exponent over the cached keys, averaged over each KV head's query group, times the value's L2 norm
(``vnorm``). The first ``sinks`` tokens are always kept.

Cost, per layer: the queries of the read again (one projection, (b, h, n, d)), an (h, d, d) covariance
(O(h n d^2)) and the quadratic form k^T S k for every key and query head (O(h n d^2)); no (n, n) matrix.
At 8K tokens on a 135M model this is a fraction of the prefill; no extra forward pass (KVzip's context
reconstruction would need a second read of the whole context and a full-cache layer pass, which the one-layer-at-
a-time compression hook does not provide).

Shapes: queries (b, h, n', d) -> mu (b, h, d), S (b, h, d, d); keys (b, k, n, d) -> scores (b, k, n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from longreach.methods.cache.base import EvictingMethod, per_kv_head
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require


def prerope_queries(observed: adapter.LayerInput, skip: int) -> torch.Tensor:
    """Queries (b, h, t - skip, d) before RoPE (after q_norm where the model has one), of the read's tokens: those
    the attention call computed when the layer input keeps them, else projected from the hidden states."""
    if observed.prerope_query is not None:
        return observed.prerope_query[:, :, skip:]
    module, hidden = observed.module, observed.hidden[:, skip:]
    query = module.q_proj(hidden).view(*hidden.shape[:2], -1, module.head_dim).transpose(1, 2)
    return module.q_norm(query) if hasattr(module, "q_norm") else query


def average_rotation(observed: adapter.LayerInput, start: int, count: int) -> torch.Tensor:
    """The mean (d, d) RoPE rotation matrix over positions start .. start + count - 1 (rotate_half convention:
    R x = cos * x + sin * rotate_half(x)), float32."""
    d = observed.module.head_dim
    positions = torch.arange(start, start + count, device=observed.hidden.device).unsqueeze(0)
    if observed.rotary is None:
        raise ValueError("expected: the layer input carries no rotary embedding")
    cos, sin = observed.rotary(observed.hidden[:, :1].float(), positions)
    cos, sin = cos[0].float(), sin[0].float()  # (count, d)
    half = torch.zeros(d, d, device=cos.device)
    half[d // 2 :, : d // 2] = torch.eye(d // 2)
    half[: d // 2, d // 2 :] = -torch.eye(d // 2)
    eye = torch.eye(d, device=cos.device)
    return (cos.unsqueeze(1) * eye + sin.unsqueeze(1) * half).mean(dim=0)


def expected_scores(
    observed: adapter.LayerInput,
    keys: torch.Tensor,
    values: torch.Tensor,
    future: int,
    sinks: int,
    covariance: bool,
    vnorm: bool,
) -> torch.Tensor:
    """Expected-attention scores (b, k, n) in float32; the first ``sinks`` tokens score highest."""
    b, k, n, d = keys.shape
    queries = prerope_queries(observed, sinks).float()
    mean = queries.mean(dim=2)  # (b, h, d)
    rotation = average_rotation(observed, observed.hidden.shape[1], future)
    mean = mean @ rotation.T
    h = mean.shape[1]
    g, m = h // k, n - sinks
    kept = keys[:, :, sinks:].float()  # (b, k, m, d): each KV head's keys serve its g query heads, never repeated
    logits = (kept @ mean.view(b, k, g, d).transpose(-1, -2)).transpose(-1, -2).reshape(b, h, m) / math.sqrt(d)
    if covariance:
        centered = queries - queries.mean(dim=2, keepdim=True)
        cov = centered.transpose(-1, -2) @ centered / queries.shape[2]  # (b, h, d, d)
        cov = rotation @ cov @ rotation.T
        side = cov.view(b, k, g, d, d).permute(0, 1, 3, 2, 4).reshape(b, k, d, g * d)  # a group's d x (g d)
        quadratic = ((kept @ side).view(b, k, m, g, d) * kept.unsqueeze(3)).sum(dim=-1)  # k^T C k: (b, k, m, g)
        logits = logits + quadratic.transpose(-1, -2).reshape(b, h, m) / d / 2
    scores = per_kv_head(logits.softmax(dim=-1), k)
    if vnorm:
        scores = scores * values[:, :, sinks:].float().norm(dim=-1)
    return F.pad(scores, (sinks, 0), value=float(scores.max()) + 1.0)


@register
@dataclass(frozen=True)
class Expected(EvictingMethod):
    """Keep the keys the estimated future queries attend to most (question-agnostic)."""

    future: int = field(default=512, metadata={"help": "future positions whose RoPE rotations are averaged"})
    sinks: int = field(default=4, metadata={"help": "first tokens always kept"})
    covariance: bool = field(default=True, metadata={"help": "use the queries' covariance, not only their mean"})
    vnorm: bool = field(default=True, metadata={"help": "multiply the scores by the values' L2 norms"})

    name: ClassVar[str] = "expected"
    summary: ClassVar[str] = "Expected Attention: keys scored by the attention estimated future queries pay them"
    paper: ClassVar[str] = (
        "Devoto et al. 2025, Expected Attention: KV Cache Compression by Estimating Attention from Future Queries "
        "Distribution"
    )
    example: ClassVar[str] = "expected:compression_ratio=0.5"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.future >= 1, f"expected: future must be >= 1 position; got {self.future}")
        require(self.sinks >= 0, f"expected: sinks must be >= 0; got {self.sinks}")

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        n = keys.shape[2]
        if observed.hidden.shape[1] != n:
            raise ValueError(
                f"expected scores one prefill's tokens; the cache holds {n}, the read {observed.hidden.shape[1]}"
            )
        return expected_scores(observed, keys, values, self.future, min(self.sinks, n - 1), self.covariance, self.vnorm)
