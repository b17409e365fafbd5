"""``quantized``: int8 / int4 KV cache (KIVI layout: Liu et al. 2024, "KIVI: A Tuning-Free Asymmetric 2bit
Quantization for KV Cache", arXiv 2402.02750).

The method stores each layer's keys/values (b, k, n, d) in :class:`QuantizedStorage`; the layout (keys per
channel, values per token, the newest tokens in float), its error bound, physical bytes and tensor shapes are
described in :mod:`longreach.methods.cache._kivi`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.methods.cache._kivi import QuantizedStorage, pack, quantize, unpack
from longreach.methods.cache.base import CacheMethod
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

__all__ = ["Quantized", "QuantizedStorage", "pack", "quantize", "unpack"]


@register
@dataclass(frozen=True)
class Quantized(CacheMethod):
    """int8 or int4 KV cache with per-channel key scales and per-token value scales (KIVI)."""

    bits: Literal[8, 4] = field(default=8, metadata={"help": "8 | 4 bits per cached value"})
    group: int = field(default=64, metadata={"help": "tokens sharing one key scale per channel"})

    name: ClassVar[str] = "quantized"
    summary: ClassVar[str] = "int8/int4 KV cache: keys per channel, values per token, newest tokens in float (KIVI)"
    paper: ClassVar[str] = "Liu et al. 2024, KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache"

    def __post_init__(self) -> None:
        require(self.bits in (4, 8), f"quantized: bits must be 8 or 4; got {self.bits}")
        require(self.group >= 1, f"quantized: group must be >= 1 token; got {self.group}")

    def compress_layer(self, observed: adapter.LayerInput, cache: Any, n_layers: int) -> None:
        keys, values = adapter.layer_kv(cache, observed.layer)
        layer = adapter.layer_type(QuantizedStorage)(self.bits, self.group)
        layer.update(keys, values)
        adapter.set_layer(cache, observed.layer, layer)
