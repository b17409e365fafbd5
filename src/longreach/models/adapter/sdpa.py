"""transformers' ``sdpa`` attention with single-query steps of grouped-query models packed by KV group.

Ein legend: b batch, h query heads, k KV heads, g = h / k query heads per KV head, n keys, d head dim.

A decode step reads one query (b, h, 1, d) against the cache's keys and values (b, k, n, d). transformers 5.24
hands such a step, when no mask is needed, to ``scaled_dot_product_attention(..., enable_gqa=True)``, whose CPU
kernel (torch 2.13) runs about 7x slower than the same attention with the g queries of each KV group packed as
that group's query rows: (b, k, g, d) over (b, k, n, d), no mask, since one new token sees every cached key.
Measured on the project's 2-core AVX-512 CPU, one layer of SmolLM2 (9 query / 3 KV heads) at 2K cached tokens:
2.3 ms with ``enable_gqa``, 0.27 ms packed (30 layers: ~60 ms of every decode step). Both compute the same
per-head reductions over the same keys; the kernel blocks the rows differently, so fp32 outputs may differ in the
last bit (bf16 outputs were equal in the tests). transformers packs this way itself only when a mask is present.
Everything else (prefill, masked or batched steps) is transformers' own ``sdpa``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

NAME = "longreach_sdpa"


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (b, h, t, d), key/value (b, k, n, d); returns
    (b, t, h, d). A step with t = 1, no mask, k < h and nothing else asked for runs packed; the rest is ``sdpa``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    plain = dropout == 0.0 and kwargs.get("position_bias") is None and kwargs.get("s_aux") is None
    if query.shape[2] != 1 or groups == 1 or attention_mask is not None or not plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, heads, _, dim = query.shape
    packed = query.view(batch, heads // groups, groups, dim)  # (b, k, g, d): a group's queries as its rows
    output = torch.nn.functional.scaled_dot_product_attention(packed, key, value, scale=scaling)  # (b, k, g, dv)
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


def _register(name: str, function: Any) -> None:
    """Make ``name`` known to transformers (attention ``function`` and, as for ``sdpa``, its mask). Idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if name not in AttentionInterface._global_mapping:
        AttentionInterface.register(name, function)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


@contextmanager
def sdpa_variant(model: Any, name: str, function: Any) -> Iterator[bool]:
    """Run ``model``'s ``sdpa`` attention as ``function`` (transformers' attention signature, registered as
    ``name``) for the block, restored after; yields whether it applied (other implementations are left as they
    are)."""
    config = model.config
    if config._attn_implementation != "sdpa":
        yield False
        return
    _register(name, function)
    model.set_attn_implementation(name)
    try:
        yield True
    finally:
        model.set_attn_implementation("sdpa")


def packed_decode_attention(model: Any) -> AbstractContextManager[bool]:
    """Run ``model``'s ``sdpa`` attention as :func:`packed_sdpa` for the block (restored after); yields whether it
    applied (models on another attention implementation, e.g. ``eager``, are left as they are)."""
    return sdpa_variant(model, NAME, packed_sdpa)
