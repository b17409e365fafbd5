"""Compressing while reading: the part of the prompt a cache method compresses is read in chunks, and after each
chunk every layer evicts down to its final budget, so later chunks attend to the kept tokens only.

Ein legend: b batch (1), h query heads, k KV heads, t tokens of a chunk, m tokens a layer holds after the chunk
(kept before it + t), K a layer's budget (``kept`` of the whole read), d head dim.

Cost: a one-shot read attends every token to every earlier one (n^2 / 2 pairs); here a chunk's t queries attend
to at most K + t keys, so the read costs O(n (K + t)) in attention and holds at most K + t tokens a layer.
What it changes (an approximation, hence opt-in through the methods' ``read_chunk`` field): once a layer has
evicted, the tokens read after see only the kept tokens, so their hidden states, keys and values differ from a one-shot
read's, and a method's scores are computed over the kept tokens of the earlier chunks with the queries of the
current chunk. What each method keeps exactly is said by its ``in_chunks`` note.

Per layer the kernel keeps the chunk's rotated keys and values in two buffers of K + t slots (preallocated: a
chunk is written in place, never by concatenating the cache): attention of the chunk's queries over the m slots
(all kept tokens visible, causal among the chunk's own, each layer's own mask, since PyramidKV's layers hold
different numbers), then the method scores the m slots (:meth:`~.base.EvictingMethod.scores`, with the chunk's
queries and ``LayerInput.question`` counted in slots) and its top K are gathered into the other buffer. The cache
returned is a plain transformers cache of exactly the kept tokens.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from longreach.models import adapter

if TYPE_CHECKING:
    from longreach.methods.cache.base import EvictingMethod
    from longreach.models import LoadedModel


class _Slots:
    """One layer's tokens during a chunked read: two buffers of ``capacity`` slots each for keys and values
    (b, k, capacity, d), the front ``length`` slots of buffer ``current`` in use."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, capacity: int) -> None:
        shape = (*key.shape[:2], capacity)
        self.keys = [key.new_empty((*shape, key.shape[-1])) for _ in range(2)]
        self.values = [value.new_empty((*shape, value.shape[-1])) for _ in range(2)]
        self.current, self.length = 0, 0

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the chunk's keys and values (b, k, t, d) after the held ones; returns the held (b, k, m, d)."""
        start, stop = self.length, self.length + key.shape[2]
        self.keys[self.current][:, :, start:stop].copy_(key)
        self.values[self.current][:, :, start:stop].copy_(value)
        self.length = stop
        return self.held()

    def held(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.keys[self.current][:, :, : self.length], self.values[self.current][:, :, : self.length]

    def keep(self, indices: torch.Tensor) -> None:
        """Keep the slots ``indices`` (b, k, K), ascending, in the other buffer (its front K slots)."""
        keys, values = self.held()
        other, kept = 1 - self.current, indices.shape[-1]
        gather = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
        torch.gather(keys, 2, gather, out=self.keys[other][:, :, :kept])
        torch.gather(values, 2, gather, out=self.values[other][:, :, :kept])
        self.current, self.length = other, kept


def read_in_chunks(method: EvictingMethod, loaded: LoadedModel, ids: torch.Tensor, question: int | None) -> Any:
    """Read ``ids`` (1, n) from position 0 in chunks of ``method.read_chunk`` tokens, each layer evicting to
    ``method.kept(n, layer)`` after every chunk; returns the cache (a plain transformers cache). ``question``: where
    the question begins in ``ids``, when it holds one."""
    model, n, chunk = loaded.model, ids.shape[1], method.read_chunk
    n_layers = len(adapter.attention_modules(model))
    budgets = [method.kept(n, layer, n_layers) for layer in range(n_layers)]
    slots: dict[int, _Slots] = {}
    read = {"start": 0, "stop": 0}

    def kernel(call: adapter.AttentionCall, inner: Any) -> torch.Tensor:
        query = call.rotated = adapter.apply_rope(call.query, call.cos, call.sin)
        key = adapter.apply_rope(call.key, call.cos, call.sin)
        if call.layer not in slots:
            slots[call.layer] = _Slots(key, call.value, budgets[call.layer] + chunk)
        keys, values = slots[call.layer].append(key, call.value)
        if not call.output_needed:  # the last layer: its keys are all the read needs (adapter.fill_cache)
            return query.new_zeros(query.shape).transpose(1, 2)
        t, m = query.shape[2], keys.shape[2]
        mask = None  # the first chunk: causal (sdpa's own), nothing held before it
        if m > t:  # every held token visible, causal among the chunk's own (the last t slots)
            mask = torch.ones(1, 1, t, m, dtype=torch.bool, device=query.device)
            mask[..., m - t :] = torch.ones(t, t, dtype=torch.bool, device=query.device).tril()
        return dataclasses.replace(call, attention_mask=mask).standard(query, keys, values)

    def evict(observed: adapter.LayerInput, _cache: Any) -> None:
        layer = slots[observed.layer]
        keys, values = layer.held()
        m, kept = keys.shape[2], budgets[observed.layer]
        if m <= kept:
            return
        start, stop = read["start"], read["stop"]
        if question is not None and question < stop:  # the question's tokens of this chunk, counted in slots
            observed.question = m - (stop - max(question, start))
        layer.keep(method.choose(method.scores(observed, keys, values), kept))

    with adapter.attention_kernel(model, kernel), adapter.after_attention(model, evict, with_queries=True):
        for start in range(0, n, chunk):
            read["start"], read["stop"] = start, min(start + chunk, n)
            adapter.fill_cache(model, ids[:, start : read["stop"]], adapter.empty_cache(model), start)
    cache = adapter.empty_cache(model)
    for layer in range(n_layers):
        keys, values = slots[layer].held()
        cache.update(keys[:, :, :0], values[:, :, :0], layer)  # an initialised, empty layer ...
        adapter.set_layer_kv(cache, layer, keys.contiguous(), values.contiguous())  # ... holding the kept tokens
    return cache
