"""transformers' ``sdpa`` attention, faster in two cases: single-query steps of grouped-query models (packed by KV
group) and reads continued on a cache (split in two calls without the mask).

Ein legend: b batch, h query heads, k KV heads, g = h / k query heads per KV head, n keys, d head dim.

A decode step reads one query (b, h, 1, d) against the cache's keys and values (b, k, n, d). transformers 5.24
hands such a step, when no mask is needed, to ``scaled_dot_product_attention(..., enable_gqa=True)``, whose CPU
kernel (torch 2.13) runs about 7x slower than the same attention with the g queries of each KV group packed as
that group's query rows: (b, k, g, d) over (b, k, n, d), no mask, since one new token sees every cached key.
Measured on the project's 2-core AVX-512 CPU, one layer of SmolLM2 (9 query / 3 KV heads) at 2K cached tokens:
2.3 ms with ``enable_gqa``, 0.27 ms packed (30 layers: ~60 ms of every decode step). Both compute the same
per-head reductions over the same keys; the kernel blocks the rows differently, so fp32 outputs may differ in the
last bit (bf16 outputs were equal in the tests). transformers packs this way itself only when a mask is present.

A read continued on top of a cache (prefix reuse, a question read after its context, a reader's last step) has t
query rows at positions p .. p + t - 1 over n = p + t keys, p of them cached. transformers then hands ``sdpa`` a
(b, 1, t, n) bool mask, and the CPU kernel, given any mask, computes every (query, key) block, the masked upper
triangle included, after turning the mask into a float tensor of t x n (3.8 GB for 29K rows over 33K keys) that it
reads again for every head; a read from scratch has no mask and takes the causal kernel, which skips the masked
half. Seen in a 32K passkey read of SmolLM2 in fp32: 972 s continued from 3.6K kept tokens, 470 s from scratch.
:func:`continued_sdpa` computes such a read as two kernel calls and no mask, merged by their log-sum-exps
(:func:`split_causal`): the t queries over the p cached keys (each sees all of them; GQA packed as above), and over
their own t keys under the causal kernel; softmax over the union is the two partial softmaxes reweighted by
exp(lse_part - lse_union). The CPU flash kernel returns the log-sum-exp (``_scaled_dot_product_flash_attention_
for_cpu``; torch has no public call for it), so this form is CPU-only. A mask of another shape (a sliding window,
padding) or another device runs in chunks of :data:`ROWS` query rows, each over the keys up to the last one its rows
may see, so the kernel visits about the causal half and each chunk's float mask is ROWS x n.

Everything else (a read from scratch, masked or batched decode steps) is transformers' own ``sdpa``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

NAME = "longreach_sdpa"
CONTINUED_NAME = "longreach_continued"
ROWS = 1024  # query rows per kernel call when continued_sdpa chunks a masked read
CHECKED = "_longreach_causal_continuation"  # the attribute checked_once keeps its answer in, on the mask


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


def split_causal(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None) -> torch.Tensor:
    """Causal attention of query (b, h, t, d) at positions n - t .. n - 1 over key/value (b, k, n, d), as the
    cached part (no mask, query heads packed by KV group) and the new part (the causal kernel) merged by their
    log-sum-exps; returns (b, t, h, d). CPU only (the kernel that returns the log-sum-exp)."""
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    batch, heads, rows, _ = query.shape
    groups, cached = heads // key.shape[1], key.shape[2] - rows
    packed = query.reshape(batch, key.shape[1], groups * rows, query.shape[3])  # head j reads KV head j // g
    old, old_lse = flash(packed, key[:, :, :cached], value[:, :, :cached], 0.0, False, scale=scaling)
    new_key, new_value = (t[:, :, cached:].repeat_interleave(groups, dim=1) for t in (key, value))
    new, new_lse = flash(query, new_key, new_value, 0.0, True, scale=scaling)  # (b, h, t, dv), (b, h, t)
    old_lse = old_lse.reshape(batch, heads, rows)
    lse = torch.logaddexp(old_lse, new_lse)
    old_weight, new_weight = (old_lse - lse).exp()[..., None], (new_lse - lse).exp()[..., None]
    merged = old.reshape(new.shape).float() * old_weight + new.float() * new_weight
    return merged.to(query.dtype).transpose(1, 2).contiguous()


def is_causal_continuation(mask: torch.Tensor) -> bool:
    """Whether the bool mask (b, 1 or h, t, n) lets row i see exactly keys 0 .. n - t + i (no window, no padding);
    checked :data:`ROWS` rows at a time, so no t x t temporary is made."""
    rows, keys = mask.shape[-2:]
    cached = keys - rows
    if cached < 0:
        return False
    columns = torch.arange(keys, device=mask.device)[None, :]
    for start in range(0, rows, ROWS):
        block = mask[..., start : start + ROWS, :]
        last_seen = torch.arange(start, start + block.shape[-2], device=mask.device)[:, None] + cached
        if not bool((block == (columns <= last_seen)).all()):
            return False
    return True


def checked_once(mask: torch.Tensor) -> bool:
    """:func:`is_causal_continuation` of ``mask``, computed once per tensor and kept on it: transformers hands
    every layer of a forward the same mask object, and the check's t x n comparisons took 2.3 s a layer at 21K
    rows over 32K keys (one thread of a busy 2-core AMD EPYC): a minute of a 30-layer read if repeated."""
    known = getattr(mask, CHECKED, None)
    if known is None:
        known = is_causal_continuation(mask)
        setattr(mask, CHECKED, known)
    return known


def continued_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (b, h, t, d), key/value (b, k, n, d), bool mask
    (b, 1 or h, t, n); returns (b, t, h, d). A causal read continued on a cache runs as :func:`split_causal` on
    the CPU; another bool mask over more than :data:`ROWS` rows runs ROWS rows at a time, each chunk over keys
    ``[0, e)``, e one past the last key any of its rows sees; the rest is ``sdpa``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attend(rows: slice, keys: int, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa_attention_forward(
            module, query[:, :, rows], key[:, :, :keys], value[:, :, :keys], mask, dropout=dropout, scaling=scaling,
            **kwargs,
        )[0]  # fmt: skip

    rows = query.shape[2]
    plain = dropout == 0.0 and kwargs.get("position_bias") is None and kwargs.get("s_aux") is None
    if attention_mask is None or attention_mask.dtype != torch.bool or rows == 1 or not plain:
        return attend(slice(None), key.shape[2], attention_mask), None
    if query.device.type == "cpu" and key.shape[2] > rows and checked_once(attention_mask):
        return split_causal(query, key, value, scaling), None
    if rows <= ROWS:
        return attend(slice(None), key.shape[2], attention_mask), None
    parts = []
    for start in range(0, rows, ROWS):
        mask = attention_mask[:, :, start : start + ROWS]
        seen = mask.any(dim=2).flatten(0, 1).any(dim=0).nonzero()  # keys some row of the chunk sees
        end = int(seen[-1]) + 1 if len(seen) else key.shape[2]
        parts.append(attend(slice(start, start + ROWS), end, mask[..., :end]))
    return torch.cat(parts, dim=1), None


def continued_read_attention(model: Any) -> AbstractContextManager[bool]:
    """Run ``model``'s ``sdpa`` attention as :func:`continued_sdpa` for the block (restored after); yields whether
    it applied (models on another attention implementation are left as they are)."""
    return sdpa_variant(model, CONTINUED_NAME, continued_sdpa)
