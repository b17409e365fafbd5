"""The engine's one prefix cache: the last uncompressed read, kept so that the next read starting the same way
continues it instead of recomputing it.

An entry holds the token ids read, their KV cache, the repr of the stack that read them (cache methods left
out: they compress a copy, never the kept read) and, when a cache method is to compress the read, what every
layer's attention read (its hidden states: cache methods score from them). Two uses:

- a plain read (no cache method) continues the kept cache from the longest prefix both share (the kept cache is
  handed over, cropped, not copied). Where the stack's computation depends on the whole length read
  (``MethodStack.reads_length``: dynamic NTK's base, SelfExtend's group size), only a read of the same length
  may continue it, since the kept keys were made for that length;
- a read to be compressed reuses a kept read of exactly the same ids whose layer inputs were kept: the cache
  method compresses a copy (another ratio or method on the same sample, another question on the same context).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longreach.models import adapter

MIN_REUSE = 64  # shorter shared prefixes are recomputed: not worth holding a cache for


@dataclass
class _Entry:
    base: str
    ids: list[int]
    cache: Any
    inputs: list[adapter.LayerInput] | None


class PrefixCache:
    """At most one kept read. ``enabled=False`` keeps nothing (every read starts from scratch)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._entry: _Entry | None = None

    def continue_from(self, base: str, ids: list[int], reads_length: bool, cap: int) -> tuple[int, Any]:
        """(tokens reused, the cache holding them) for a plain read of ``ids`` under stack ``base``, or (0, None); at
        most ``cap`` tokens are reused (a read whose last token starts the answer must compute that token). The kept
        cache is handed over: the entry is dropped either way (a new read replaces it)."""
        entry, self._entry = self._entry, None
        if entry is None or entry.base != base or not adapter.is_plain_cache(entry.cache):
            return 0, None
        if reads_length and len(entry.ids) != len(ids):
            return 0, None
        common = 0
        for a, b in zip(entry.ids, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, cap)
        if common < MIN_REUSE:
            return 0, None
        adapter.crop_cache(entry.cache, common)
        return common, entry.cache

    def exact(self, base: str, ids: list[int]) -> tuple[Any, list[adapter.LayerInput]] | None:
        """A copy of the kept cache and its layer inputs when the kept read is exactly ``ids`` under ``base``."""
        entry = self._entry
        if entry is None or entry.inputs is None or entry.base != base or entry.ids != ids:
            return None
        return adapter.clone_cache(entry.cache), entry.inputs

    def keep(self, base: str, ids: list[int], cache: Any, inputs: list[adapter.LayerInput] | None = None) -> None:
        if self.enabled:
            self._entry = _Entry(base, list(ids), cache, inputs)

    def drop(self) -> None:
        """Free the kept read (before a new one is made, so two never coexist)."""
        self._entry = None
