"""Per-sample random streams derived by hashing the sample's coordinates (never the global RNG).

Two streams per sample: ``probe`` (needles, keys, question) depends on (seed, task, depth, index) but
not on the length, so the same probe appears at every length; ``filler`` also depends on the length.
"""

from __future__ import annotations

import hashlib
import random


def stream(seed: int, task: str, name: str, *coords: object) -> random.Random:
    """A ``random.Random`` seeded from sha256 of the coordinates (stable across runs and machines)."""
    key = "|".join(str(part) for part in ("longreach-v1", seed, task, name, *coords))
    digest = hashlib.sha256(key.encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))
