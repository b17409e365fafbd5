"""Cache methods: shrink the KV cache once a prefill is read (kvpress's "presses", under our method spec).

Ein legend: b batch (1), h query heads, k KV heads, g = h / k query heads per KV head, n tokens in a layer's
cache, w observation window, d head dim. Cached keys are post-RoPE (b, k, n, d); values (b, k, n, d).

How a cache method runs (see :class:`longreach.engine.Engine`): the backend reads the part of the
prompt that may be compressed (question-aware: the prompt but its last token, so the question is inside it;
question-agnostic: the context alone), with :meth:`CacheMethod.compressing` around that forward. After each
layer's attention the method rewrites that layer's cache (:meth:`CacheMethod.compress_layer`), so the full
cache of all layers never exists at once, as in kvpress's forward hooks. Then the rest of the prompt and the
answer are read on top of the compressed cache; decoding appends normally.

Evicting methods score every cached token per KV head (:meth:`EvictingMethod.scores`, higher is kept), keep
the top ``kept(n)`` tokens of each head in position order and free the rest: the new tensors have exactly
``kept(n)`` tokens, so the physical bytes fall with the ratio. ``kept(n) = max(1, int(n * (1 - ratio)))``, the
count kvpress keeps, so both tools hold equal bytes at equal ratios.

Eviction composes with quantization through ``bits`` (8 or 4): the kept tokens are then stored in the KIVI
layout of ``quantized`` (group 64, :mod:`._kivi`), so ``snapkv:compression_ratio=0.5:bits=4`` holds half the
tokens at about 0.29 of their bytes. A knob rather than a stack of two cache methods: the engine runs one cache
method per read, and the quantizer must see the kept tokens, not the read.

Compressing while reading (``read_chunk``, opt-in): the compressed part is read in chunks of ``read_chunk`` tokens
and each layer evicts to its final budget after every chunk (:mod:`._chunked`), so attention costs O(n x kept)
instead of O(n^2). It is an approximation of the one-shot read (the tokens read after an eviction see only the
kept ones); a method that defines it says in ``in_chunks`` what stays exact, and the others refuse ``read_chunk``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from longreach.methods.base import Kind, Method
from longreach.methods.cache._chunked import read_in_chunks
from longreach.methods.cache._kivi import QuantizedStorage
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel


@dataclass(frozen=True)
class CacheMethod(Method):
    """Base class of KV-cache methods."""

    kind: ClassVar[Kind] = "cache"

    def conflict_with(self, other: Method) -> str | None:
        if other.kind == "attention":
            return (
                f"{other.name} keeps its own key layout in the cache (positions by slot), which {self.name} "
                "would rewrite; run them separately"
            )
        return None

    def compress_layer(self, observed: adapter.LayerInput, cache: object, n_layers: int) -> None:
        """Rewrite ``cache``'s layer ``observed.layer`` in place, right after that layer read the prefill."""
        raise NotImplementedError

    @contextlib.contextmanager
    def compressing(self, loaded: LoadedModel, question: int | None = None) -> Iterator[None]:
        """Compress every layer's cache right after its attention, for the forwards run inside the block.
        ``question``: the token index where the question begins in the read, when it holds one (each layer's
        :class:`~longreach.models.adapter.LayerInput` carries it). The layer's input carries the queries its
        attention computed, so scoring never projects them again."""
        n_layers = len(adapter.attention_modules(loaded.model))

        def hook(observed: adapter.LayerInput, cache: object) -> None:
            observed.question = question
            self.compress_layer(observed, cache, n_layers)

        with adapter.after_attention(loaded.model, hook, with_queries=True):
            yield

    @property
    def reads_itself(self) -> bool:
        """True when :meth:`read` reads the prompt its own way, so a kept uncompressed read (the engine's prefix
        reuse) cannot stand in for it; False when compressing each layer of any read gives the same cache."""
        return False

    def read(self, loaded: LoadedModel, ids: torch.Tensor, question: int | None = None) -> Any:
        """Read ``ids`` (1, n) from position 0 under this method and return the compressed cache: one forward with
        every layer compressed right after its attention (:meth:`compressing`), filling the cache only (no logits:
        the rest of the prompt is read next)."""
        with self.compressing(loaded, question):
            return adapter.fill_cache(loaded.model, ids)


@dataclass(frozen=True)
class EvictingMethod(CacheMethod):
    """A cache method that keeps a subset of the cached tokens per KV head, chosen by :meth:`scores` (and
    :meth:`choose`, which takes each head's best)."""

    compression_ratio: float = field(
        default=0.0, metadata={"help": "fraction of the prefilled tokens removed (0: keep all)"}
    )
    budget: int = field(default=0, metadata={"help": "tokens kept per layer instead of a ratio (0: use the ratio)"})
    bits: int = field(default=16, metadata={"help": "16: kept tokens in the model dtype; 8 | 4: quantized (KIVI)"})
    read_chunk: int = field(
        default=0,
        metadata={
            "help": "read the compressed part in chunks of this many tokens, evicting after each: attention "
            "O(n x kept) instead of O(n^2), an approximation (0: one read, then evict, as kvpress)"
        },
    )

    QUANT_GROUP: ClassVar[int] = 64  # tokens sharing a key scale when ``bits`` quantizes the kept tokens
    # What a chunked read (``read_chunk``) keeps exactly and what it approximates; "" when the method defines none.
    in_chunks: ClassVar[str] = ""

    def __post_init__(self) -> None:
        require(self.bits in (16, 8, 4), f"{self.name}: bits must be 16, 8 or 4; got {self.bits}")
        require(
            self.read_chunk >= 0, f"{self.name}: read_chunk must be >= 0 tokens (0: one read); got {self.read_chunk}"
        )
        require(
            not self.read_chunk or self.in_chunks,
            f"{self.name}: read_chunk={self.read_chunk} is not defined for this method (its scores need the whole "
            "read); use read_chunk=0",
        )
        require(
            not (self.read_chunk and self.bits != 16),
            f"{self.name}: read_chunk={self.read_chunk} evicts again after every chunk, which quantized storage "
            f"(bits={self.bits}) cannot; use one of them",
        )
        require(
            0.0 <= self.compression_ratio < 1.0,
            f"{self.name}: compression_ratio must be in [0, 1) (the fraction removed); got {self.compression_ratio}",
        )
        require(self.budget >= 0, f"{self.name}: budget must be >= 0 tokens; got {self.budget}")
        require(
            not (self.budget and self.compression_ratio),
            f"{self.name}: give compression_ratio or budget, not both "
            f"(got compression_ratio={self.compression_ratio}, budget={self.budget})",
        )

    def kept(self, n: int, layer: int = 0, n_layers: int = 1) -> int:
        """Tokens a layer keeps out of ``n`` (kvpress's count for a ratio; ``budget`` capped at n)."""
        if self.budget:
            return min(n, self.budget)
        if self.compression_ratio == 0.0:
            return n
        return max(1, int(n * (1.0 - self.compression_ratio)))

    def scores(self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Importance of every cached token, (b, k, n) in float32; the highest ``kept`` are kept."""
        raise NotImplementedError

    @property
    def reads_itself(self) -> bool:
        return self.read_chunk > 0

    def read(self, loaded: LoadedModel, ids: torch.Tensor, question: int | None = None) -> Any:
        """One forward compressing each layer after its attention, or with ``read_chunk`` a read in chunks evicting
        after each (:func:`._chunked.read_in_chunks`)."""
        if self.read_chunk and ids.shape[1] > self.read_chunk:
            return read_in_chunks(self, loaded, ids, question)
        return super().read(loaded, ids, question)

    def select(
        self, observed: adapter.LayerInput, keys: torch.Tensor, values: torch.Tensor, n_layers: int
    ) -> torch.Tensor | None:
        """Indices (b, k, kept) of the tokens kept, ascending; None when the layer keeps everything."""
        n = keys.shape[2]
        kept = self.kept(n, observed.layer, n_layers)
        if kept >= n:
            return None
        return self.choose(self.scores(observed, keys, values), kept)

    def choose(self, scores: torch.Tensor, kept: int) -> torch.Tensor:
        """Ascending indices (b, k, kept) of the tokens kept, from their scores (b, k, n): each head's top ``kept``."""
        return scores.topk(kept, dim=-1).indices.sort(dim=-1).values

    def compress_layer(self, observed: adapter.LayerInput, cache: object, n_layers: int) -> None:
        keys, values = adapter.layer_kv(cache, observed.layer)
        indices = self.select(observed, keys, values, n_layers)
        if indices is not None:
            gather = indices.unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1])
            keys, values = keys.gather(2, gather), values.gather(2, gather)
            adapter.set_layer_kv(cache, observed.layer, keys, values)
        if self.bits != 16:
            layer = adapter.layer_type(QuantizedStorage)(self.bits, self.QUANT_GROUP)
            layer.update(keys, values)
            adapter.set_layer(cache, observed.layer, layer)


def window_attention(observed: adapter.LayerInput, keys: torch.Tensor, window: int) -> torch.Tensor:
    """Softmax attention (b, h, w, n) of the last ``window`` queries over all n cached keys, causal inside the
    window, in float32 (SnapKV's observation window). keys (b, k, n, d) post-RoPE."""
    queries = observed.queries(last=window).float() * observed.module.scaling  # scaled before the product: w x d
    b, h, w, d = queries.shape
    k, n = keys.shape[1], keys.shape[2]
    grouped = queries.reshape(b, k, (h // k) * w, d)
    logits = (grouped @ keys.float().transpose(-1, -2)).view(b, h, w, n)
    future = torch.ones(w, w, dtype=torch.bool, device=keys.device).triu(1)
    logits[..., n - w :].masked_fill_(future, float("-inf"))
    return logits.softmax(dim=-1)


def attention_mass(observed: adapter.LayerInput, keys: torch.Tensor, block: int = 512) -> torch.Tensor:
    """Causal softmax attention summed over every query, per key: (b, h, n) in float32 (H2O's accumulated
    attention). Computed in query blocks from the queries and cached keys, so no (n, n) matrix and no eager
    attention are needed. keys (b, k, n, d) post-RoPE; the queries are those of the n tokens just read.
    Kept in ``observed.memo``: methods compressing the same read (other ratios, other settings) reuse it."""
    if "attention_mass" in observed.memo:
        return observed.memo["attention_mass"]
    queries = observed.queries()
    b, h, n, d = queries.shape
    k = keys.shape[1]
    g = h // k
    keys32 = keys.float()
    mass = torch.zeros(b, h, n, dtype=torch.float32, device=keys.device)
    future = torch.ones(block, block, dtype=torch.bool, device=keys.device).triu(1)
    for start in range(0, n, block):
        stop = min(start + block, n)
        q = (queries[:, :, start:stop].float() * observed.module.scaling).reshape(b, k, g * (stop - start), d)
        logits = (q @ keys32[:, :, :stop].transpose(-1, -2)).view(b, h, stop - start, stop)
        logits[..., start:].masked_fill_(future[: stop - start, : stop - start], float("-inf"))  # causal block
        mass[..., :stop] += logits.softmax(dim=-1).sum(dim=-2)
    observed.memo["attention_mass"] = mass
    return mass


def per_kv_head(scores: torch.Tensor, kv_heads: int, reduce: str = "mean") -> torch.Tensor:
    """(b, h, n) query-head scores -> (b, k, n) over each KV head's group: the mean (kvpress's GQA rule) or the max
    (a token one query head needs is kept even when the group's other heads ignore it)."""
    b, h, n = scores.shape
    grouped = scores.reshape(b, kv_heads, h // kv_heads, n)
    return grouped.amax(dim=2) if reduce == "max" else grouped.mean(dim=2)
