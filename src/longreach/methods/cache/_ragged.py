"""A KV cache layer whose KV heads hold different numbers of tokens (head-wise budgets: ``adakv``, ``duo``),
and the attention kernel that reads it.

Storage: one keys tensor and one values tensor per KV head, (b, 1, m_h, d) each, so the physical bytes are
exactly the sum of what the heads keep (no padding to the longest head, no mask over a full-size cache as
kvpress's AdaKV does: its cache keeps every token and masks the evicted ones). New tokens are appended to every
head. transformers' attention takes one (b, k, n, d) tensor, so while the method is applied
(:meth:`~longreach.methods.base.Method.applied`) a kernel computes attention head by head for these layers:
each KV head's query group attends over that head's tokens (all cached ones visible, causal among the new ones),
with the model's scaling, in the model's dtype (``scaled_dot_product_attention``). Other layers go to the model.

``get_seq_length`` reports the mean number of tokens per head (exact when the heads' total is k x the layer
budget, as both methods keep it): layer lengths then match the uniform methods', and transformers' own causal
mask, built from it, is not used for these layers (the kernel builds its own).

Shapes: query (b, h, t, d) rotated; per head h' keys/values (b, 1, m_h', d); g = h / k query heads per KV head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from longreach.models import adapter


class RaggedStorage:
    """One layer's cache with per-KV-head token counts (combined with transformers' ``DynamicLayer`` by
    :func:`ragged_layer`)."""

    is_croppable = False

    def __init__(self, head_keys: list[torch.Tensor], head_values: list[torch.Tensor]) -> None:
        super().__init__()
        self.head_keys, self.head_values = head_keys, head_values
        self.device = head_keys[0].device
        self.keys = self.values = None  # DynamicLayer's dense tensors: unused
        self.is_initialized = True

    def head_lengths(self) -> list[int]:
        return [keys.shape[2] for keys in self.head_keys]

    def get_seq_length(self) -> int:
        return sum(self.head_lengths()) // len(self.head_keys)

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Append new tokens (b, k, t, d) to every head."""
        for head in range(len(self.head_keys)):
            self.head_keys[head] = torch.cat((self.head_keys[head], key_states[:, head : head + 1]), dim=2)
            self.head_values[head] = torch.cat((self.head_values[head], value_states[:, head : head + 1]), dim=2)

    def update(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "a cache layer with per-head budgets was read without its attention kernel: apply the method "
            "(MethodStack.applied) around every forward on its cache"
        )

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a cache with per-head budgets cannot be cropped")


def ragged_layer(head_keys: list[torch.Tensor], head_values: list[torch.Tensor]) -> Any:
    return adapter.layer_type(RaggedStorage)(head_keys, head_values)


def ragged_kernel(call: adapter.AttentionCall, inner: Callable[[adapter.AttentionCall], torch.Tensor]) -> torch.Tensor:
    """Attention over a :class:`RaggedStorage` layer, KV head by KV head; any other layer goes to ``inner``."""
    layer = call.cache.layers[call.layer] if call.cache is not None else None
    if not isinstance(layer, RaggedStorage):
        return inner(call)
    query = adapter.apply_rope(call.query, call.cos, call.sin)
    layer.append(adapter.apply_rope(call.key, call.cos, call.sin), call.value)
    t, g = query.shape[2], call.groups
    outputs = []
    for head, (keys, values) in enumerate(zip(layer.head_keys, layer.head_values, strict=True)):
        m = keys.shape[2]
        mask = None
        if t > 1:  # every cached token visible, causal among the t new ones (the last t of the head)
            mask = torch.ones(t, m, dtype=torch.bool, device=query.device)
            mask[:, m - t :] = torch.ones(t, t, dtype=torch.bool, device=query.device).tril()
        group = query[:, head * g : (head + 1) * g]
        outputs.append(
            F.scaled_dot_product_attention(
                group, keys.expand(-1, g, -1, -1), values.expand(-1, g, -1, -1), attn_mask=mask, scale=call.scaling
            )
        )
    return torch.cat(outputs, dim=1).transpose(1, 2)  # (b, t, h, d)


def store_per_head(cache: Any, layer: int, keys: torch.Tensor, values: torch.Tensor, kept: list[torch.Tensor]) -> None:
    """Replace ``layer`` of ``cache`` by the tokens ``kept[h]`` (ascending indices) of each KV head h."""
    head_keys = [keys[:, h : h + 1, index].contiguous() for h, index in enumerate(kept)]
    head_values = [values[:, h : h + 1, index].contiguous() for h, index in enumerate(kept)]
    adapter.set_layer(cache, layer, ragged_layer(head_keys, head_values))
