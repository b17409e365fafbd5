"""Attention kernels shared by attention methods and readers: softmax attention that also returns each row's
log-sum-exp, and the exact merge of partial attentions over disjoint key sets (flash attention's rule).

Ein legend: b batch, h heads, t queries, n keys, d head dim.
"""

from __future__ import annotations

import torch


def attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention that also returns each row's log-sum-exp, so partial attentions over disjoint key
    sets can be merged exactly. query (b, h, t, d), key/value (b, h, n, d), mask (t, n) bool (True = attend).
    Returns output (b, h, t, d) and lse (b, h, t) in float32; rows with no allowed key get lse = -inf.

    On CPU this is torch's flash kernel (``_scaled_dot_product_flash_attention_for_cpu``, an aten op that
    returns the log-sum-exp); elsewhere a plain float32 computation.
    """
    additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(~mask, float("-inf"))
    if query.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, attn_mask=additive, scale=scale
        )
    else:
        scores = (query.float() @ key.float().transpose(-1, -2)) * scale + additive.float()
        lse = torch.logsumexp(scores, dim=-1)
        output = (torch.softmax(scores, dim=-1) @ value.float()).to(query.dtype)
    empty = ~mask.any(dim=-1)
    lse = lse.float().masked_fill(empty, float("-inf"))
    return torch.nan_to_num(output.masked_fill(empty[:, None], 0.0)), lse


def merge_attention(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine partial attentions (output (b,h,t,d), lse (b,h,t)) over disjoint key sets into one."""
    lses = torch.stack([lse for _, lse in parts])
    top = lses.max(dim=0).values.masked_fill(torch.isinf(lses.max(dim=0).values), 0.0)
    weights = torch.exp(lses - top)
    total = weights.sum(dim=0)
    merged = sum(w[..., None] * out.float() for (out, _), w in zip(parts, weights, strict=True))
    return (merged / total[..., None]).to(parts[0][0].dtype)
