"""``decompose``: Dataset Decomposition, variable sequence length training with a short-to-long curriculum
(Pouransari et al. 2024, "Dataset Decomposition: Faster LLM Training with Variable Sequence Length Curriculum",
NeurIPS 2024, arXiv 2405.13226).

Each document is cut, on its own (never concatenated with others), into chunks of power-of-two lengths: while at
least 2^low tokens remain, take k = min(floor(log2(remaining)), high) and cut 2^k tokens, so a document of up to
2^high tokens gives one chunk per 1-bit of its length (its binary expansion, largest first), a longer one gives
2^high chunks first, and a remainder below 2^low is dropped. Chunk j of bucket D_k has 2^k tokens. A step draws one
bucket and trains on ``step_tokens / 2^k`` of its chunks (rows of 2^k tokens, split into forward passes of
``--length`` tokens): every step reads the same number of tokens, the batch size varies with the length, and no
attention crosses a document. The curriculum picks buckets within a cycle of ``cycle`` steps with probability
proportional to weight x steps available; ``grow`` weighs bucket k by 2^(high-k) (the paper's "Grow-P2", short
first), ``sorted`` takes the shortest ready bucket (strictly short to long), ``uniform`` weighs all alike.

Deviation: the paper stores 2^k + 1 tokens per chunk (the +1 is the shifted target); rows here are exactly 2^k
tokens read (what sets the attention cost), so a row scores 2^k - 1 predictions.

Compare with concat-and-chunk at equal tokens with the same data, length, steps and --batch-tokens:
``longreach train --recipe decompose ...`` against ``longreach train --recipe plain ...`` (train.json of each holds
wall time, tokens/s and the loss curve).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from longreach.errors import LongreachError
from longreach.params import require
from longreach.train.recipe import IGNORE, Document, Recipe, TrainBatch, register_recipe

Curriculum = Literal["grow", "sorted", "uniform"]


def decompose(document: Document, low: int, high: int) -> list[Document]:
    """The power-of-two chunks of ``document`` (largest first), each keeping the part of ``loss_start`` it covers;
    tokens after the last chunk (fewer than 2^low) are dropped."""
    chunks, start, size = [], 0, len(document.tokens)
    while size - start >= 2**low:
        width = 2 ** min((size - start).bit_length() - 1, high)
        tokens = document.tokens[start : start + width]
        chunks.append(Document(tokens, max(0, document.loss_start - start), document.kind))
        start += width
    return chunks


def bucket_batch(chunks: list[Document]) -> TrainBatch:
    """Chunks of one length 2^k -> one (rows, 2^k) batch, positions 0..2^k-1, plain causal attention."""
    ids = torch.tensor([chunk.tokens for chunk in chunks])  # (rows, 2^k)
    labels = ids.clone()
    for row, chunk in enumerate(chunks):
        labels[row, : chunk.loss_start] = IGNORE
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    return TrainBatch(ids, labels, positions.contiguous())


@register_recipe
@dataclass(frozen=True)
class Decompose(Recipe):
    """Power-of-two length buckets, one bucket per step at constant tokens per step, short-to-long curriculum."""

    min_log2: int = field(default=8, metadata={"help": "shortest bucket 2^min_log2 tokens (paper: 8, 256 tokens)"})
    max_log2: int = field(default=0, metadata={"help": "longest bucket 2^max_log2 (0: the largest <= --length)"})
    curriculum: Curriculum = field(default="grow", metadata={"help": "grow (2^(high-k) weights) | sorted | uniform"})
    cycle: int = field(default=16, metadata={"help": "steps per curriculum cycle (buckets refilled per cycle)"})

    name: ClassVar[str] = "decompose"
    summary: ClassVar[str] = "power-of-two length buckets, one per step, short-to-long curriculum"
    paper: ClassVar[str] = "Pouransari et al. 2024 (Dataset Decomposition)"
    example: ClassVar[str] = "decompose:min_log2=4"

    def __post_init__(self) -> None:
        require(self.min_log2 >= 1, f"decompose: min_log2 must be >= 1; got {self.min_log2}")
        require(self.max_log2 >= 0, f"decompose: max_log2 must be >= 0 (0: from --length); got {self.max_log2}")
        require(self.cycle >= 1, f"decompose: cycle must be >= 1; got {self.cycle}")

    def bounds(self, length: int) -> tuple[int, int]:
        """(low, high): the bucket exponents for training length ``length``."""
        high = self.max_log2 or length.bit_length() - 1
        if 2**high > length:
            raise LongreachError(f"decompose: max_log2={high} ({2**high} tokens) exceeds --length {length}")
        if self.min_log2 > high:
            raise LongreachError(f"decompose: min_log2={self.min_log2} exceeds the longest bucket 2^{high}")
        return self.min_log2, high

    def steps(
        self, documents: Iterator[Document], length: int, batch_tokens: int, rng: np.random.Generator
    ) -> Iterator[list[TrainBatch]]:
        """Steps of ``step_tokens`` tokens (``batch_tokens`` rounded up to a multiple of 2^high), one bucket each."""
        low, high = self.bounds(length)
        step_tokens = math.ceil(batch_tokens / 2**high) * 2**high
        pools: dict[int, collections.deque[Document]] = {k: collections.deque() for k in range(low, high + 1)}
        documents = iter(documents)
        while True:
            exhausted = self._fill(pools, documents, step_tokens, low, high)
            ready = self._ready(pools, step_tokens)
            if not ready:
                return
            while ready:
                bucket = self._pick(ready, high, rng)
                chunks = [pools[bucket].popleft() for _ in range(step_tokens // 2**bucket)]
                rows = max(1, length // 2**bucket)  # rows per forward pass: about --length tokens each
                yield [bucket_batch(chunks[i : i + rows]) for i in range(0, len(chunks), rows)]
                ready = self._ready(pools, step_tokens)
            if exhausted:
                return

    def _fill(
        self,
        pools: dict[int, collections.deque[Document]],
        documents: Iterator[Document],
        step: int,
        low: int,
        high: int,
    ) -> bool:
        """Decompose documents into the pools until ``cycle`` steps are ready; True when the stream ran out."""
        while sum(self._ready(pools, step).values()) < self.cycle:
            document = next(documents, None)
            if document is None:
                return True
            for chunk in decompose(document, low, high):
                pools[len(chunk.tokens).bit_length() - 1].append(chunk)
        return False

    @staticmethod
    def _ready(pools: dict[int, collections.deque[Document]], step: int) -> dict[int, int]:
        """Bucket -> how many whole steps its pool holds (buckets holding none left out)."""
        counts = {k: len(pool) * 2**k // step for k, pool in pools.items()}
        return {k: n for k, n in counts.items() if n}

    def _pick(self, ready: dict[int, int], high: int, rng: np.random.Generator) -> int:
        """The bucket of the next step under the curriculum."""
        buckets = sorted(ready)
        if self.curriculum == "sorted":
            return buckets[0]
        weights = np.array([ready[k] * (2.0 ** (high - k) if self.curriculum == "grow" else 1.0) for k in buckets])
        return int(buckets[rng.choice(len(buckets), p=weights / weights.sum())])

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        """The forward passes of :meth:`steps` with one ``length``-token step each."""
        for step in self.steps(documents, length, length, rng):
            yield from step
