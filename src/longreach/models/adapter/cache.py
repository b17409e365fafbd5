"""KV caches: their physical bytes, cropping and copying, per-layer keys and values, and the one helper that
turns a method's own per-layer storage into a transformers cache layer.

Shapes: cached keys and values of a layer (b, k, n, d). transformers 5.24 caches are ``cache.layers``, each layer
keeping its tensors in attributes.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def _tensors_in(obj: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """Every tensor a transformers cache holds (keys, values, quantized payloads, scales, centroids...)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"unsupported cache type {type(cache).__name__}: expected a transformers Cache")
    return [t for layer in layers for t in _tensors_in(layer)]


def physical_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the storages behind ``tensors``, each storage counted once (views share storage)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def cache_bytes(cache: Any) -> int:
    """Physical bytes of a KV cache: what the tensors occupy, not a count of logical tokens."""
    return physical_bytes(cache_tensors(cache))


def empty_cache(model: Any) -> Any:
    """An empty transformers KV cache for ``model`` (DynamicCache)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def crop_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` tokens of every layer of a transformers cache (in place).
    transformers 5.24's ``crop`` takes the negative number of tokens to remove."""
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)


def clone_cache(cache: Any) -> Any:
    """An independent copy of a cache (every tensor copied)."""
    return copy.deepcopy(cache)


def is_plain_cache(cache: Any) -> bool:
    """True for a DynamicCache of DynamicLayers with one length in every layer: the cache of a prefix,
    which a longer prompt can continue (prefix reuse)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return False
    return len({layer.get_seq_length() for layer in cache.layers}) <= 1


def layer_lengths(cache: Any) -> list[int]:
    """Tokens held by each layer (they differ after layer-varying compression)."""
    return [layer.get_seq_length() for layer in cache.layers]


def layer_kv(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached keys and values (b, k, n, d) of one layer."""
    entry = cache.layers[layer]
    return entry.keys, entry.values


def set_layer_kv(cache: Any, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Replace one layer's cached keys and values (the old storages are freed when nothing else holds them)."""
    entry = cache.layers[layer]
    entry.keys, entry.values = keys, values


def set_layer(cache: Any, layer: int, replacement: Any) -> None:
    """Replace a cache's layer object (a method's own storage, see :func:`layer_type`) in place."""
    cache.layers[layer] = replacement


@functools.cache
def layer_type(storage: type) -> type:
    """A transformers cache-layer class made of a method's ``storage`` class (its own tensors and ``update``)
    on top of transformers' ``DynamicLayer`` (so the cache's bookkeeping works); built once per storage."""
    from transformers.cache_utils import DynamicLayer

    return type(storage.__name__.removesuffix("Storage") + "Layer", (storage, DynamicLayer), {})


def merge_rows(caches: list[Any]) -> tuple[Any, list[int]]:
    """One cache holding the batch rows of every cache in ``caches`` (plain caches, see :func:`is_plain_cache`),
    each left-padded with zero slots to the longest; returns (cache, slots of padding added before each row).
    The first cache object is reused (its layers now hold the merged tensors)."""
    lengths = [cache.get_seq_length() for cache in caches]
    rows = [cache.layers[0].keys.shape[0] for cache in caches]
    longest = max(lengths)
    merged = caches[0]
    for index in range(len(merged.layers)):
        keys, values = [], []
        for cache, length in zip(caches, lengths, strict=True):
            k, v = layer_kv(cache, index)
            pad = (0, 0, longest - length, 0)
            keys.append(torch.nn.functional.pad(k, pad))
            values.append(torch.nn.functional.pad(v, pad))
        set_layer_kv(merged, index, torch.cat(keys), torch.cat(values))
    return merged, [longest - length for length, count in zip(lengths, rows, strict=True) for _ in range(count)]


def select_rows(cache: Any, rows: list[int], drop: int = 0) -> None:
    """Keep the batch rows ``rows`` of a plain cache (in place, new storages), without its first ``drop`` slots."""
    index = torch.tensor(rows, dtype=torch.long, device=cache.layers[0].keys.device)
    for layer in range(len(cache.layers)):
        keys, values = layer_kv(cache, layer)
        set_layer_kv(cache, layer, keys[:, :, drop:].index_select(0, index), values[:, :, drop:].index_select(0, index))


def _preallocated_layer(capacity: int) -> type:
    """A ``DynamicLayer`` whose keys and values are views into buffers of ``capacity`` slots (b, k, capacity, d):
    ``update`` writes the new tokens in place instead of concatenating (which copies the whole layer every step)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, layer: Any) -> None:
            super().__init__()
            keys, values = layer.keys, layer.values
            length = keys.shape[-2]
            self.key_buffer = keys.new_empty((*keys.shape[:2], max(capacity, length), keys.shape[-1]))
            self.value_buffer = values.new_empty((*values.shape[:2], max(capacity, length), values.shape[-1]))
            self.key_buffer[:, :, :length].copy_(keys)
            self.value_buffer[:, :, :length].copy_(values)
            self.keys, self.values = self.key_buffer[:, :, :length], self.value_buffer[:, :, :length]
            self.device, self.is_initialized = keys.device, True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            length, new = self.keys.shape[-2], key_states.shape[-2]  # the views' length (``crop`` shortens them)
            if length + new > self.key_buffer.shape[-2]:  # past the capacity: grow as a DynamicLayer would
                self.key_buffer = torch.cat([self.keys, key_states], dim=-2)
                self.value_buffer = torch.cat([self.values, value_states], dim=-2)
            else:
                self.key_buffer[:, :, length : length + new].copy_(key_states)
                self.value_buffer[:, :, length : length + new].copy_(value_states)
            self.keys = self.key_buffer[:, :, : length + new]
            self.values = self.value_buffer[:, :, : length + new]
            return self.keys, self.values

    return PreallocatedLayer


@contextmanager
def preallocated(cache: Any, new_tokens: int) -> Iterator[bool]:
    """For the block, a plain cache (:func:`is_plain_cache`) writes new tokens in place into buffers with room
    for ``new_tokens`` more tokens per layer (allocated now, the tokens held copied in), so a decode step costs
    no copy of the cache (past the room it grows as before). Yields whether it applied: other caches (a cache
    method's layers, different lengths per layer, empty) are left as they are. On exit the layers are plain
    ``DynamicLayer`` objects again, holding views of the buffers: the cache's physical bytes
    (:func:`cache_bytes`) are the buffers' (held tokens + ``new_tokens``), whatever was used."""
    from transformers.cache_utils import DynamicLayer

    if not is_plain_cache(cache) or not cache.layers or cache.get_seq_length() == 0:
        yield False
        return
    layer_class = _preallocated_layer(cache.get_seq_length() + max(new_tokens, 0))
    cache.layers[:] = [layer_class(layer) for layer in cache.layers]
    try:
        yield True
    finally:
        plain = []
        for layer in cache.layers:
            restored = DynamicLayer()
            restored.keys, restored.values = layer.keys, layer.values
            restored.device, restored.is_initialized = layer.device, layer.is_initialized
            plain.append(restored)
        cache.layers[:] = plain
