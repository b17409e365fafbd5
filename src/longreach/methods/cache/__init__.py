"""KV-cache methods (kind ``cache``): evict or quantize the cache once a prefill is read (see :mod:`.base`)."""

from longreach.methods.cache.base import CacheMethod, EvictingMethod
from longreach.methods.cache.h2o import H2O
from longreach.methods.cache.knorm import Knorm
from longreach.methods.cache.pyramid import Pyramid
from longreach.methods.cache.quantized import Quantized
from longreach.methods.cache.snapkv import SnapKV
from longreach.methods.cache.streaming import Streaming

CACHE_METHODS = (Streaming, H2O, SnapKV, Pyramid, Knorm, Quantized)

__all__ = ["CACHE_METHODS", "CacheMethod", "EvictingMethod"]
