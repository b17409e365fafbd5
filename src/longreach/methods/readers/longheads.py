"""``longheads``: every head reads its own chosen chunks within the trained length (Lu et al. 2024,
"LongHeads: Multi-Head Attention is Secretly a Long Context Processor", arXiv 2402.10685).

Chunks of ``chunk`` tokens; each head attends to ``chunks`` of them: the first, its top-scoring earlier
chunks by attention-pooled chunk keys, the previous and the current chunk, at contiguous positions. See
:mod:`longreach.methods.readers.blocks` for the kernel and the documented deviations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from longreach.methods.readers.base import ReaderMethod
from longreach.methods.readers.blocks import BlockRetrieval, read_with_blocks
from longreach.params import require

if TYPE_CHECKING:
    from longreach.backends.base import Generation, Request
    from longreach.backends.hf import HFBackend
    from longreach.methods.base import Method
    from longreach.methods.spec import MethodStack


@dataclass(frozen=True)
class LongHeads(ReaderMethod):
    """Per-head chunk selection with attention-pooled chunk keys."""

    chunk: int = field(default=256, metadata={"help": "chunk size w in tokens"})
    chunks: int = field(default=16, metadata={"help": "chunks each head attends to (chunks x chunk <= L)"})
    segment: int = field(default=4096, metadata={"help": "prefill tokens per forward (a multiple of chunk)"})

    name: ClassVar[str] = "longheads"
    summary: ClassVar[str] = "LongHeads: each head attends to its top chunks, positions within the window"
    paper: ClassVar[str] = "Lu et al. 2024, LongHeads"

    def __post_init__(self) -> None:
        require(self.chunk >= 1 and self.chunks >= 3, "longheads: need chunk >= 1 and chunks >= 3")
        require(self.segment % self.chunk == 0, f"longheads: segment must be a multiple of chunk ({self.chunk})")

    def conflict_with(self, other: Method) -> str | None:
        return "both replace the attention kernel" if other.kind == "attention" else super().conflict_with(other)

    def read(self, backend: HFBackend, request: Request, inner: MethodStack) -> Generation:
        retrieval = BlockRetrieval(self.chunk, self.chunks, "pooled")
        return read_with_blocks(backend, request, inner, retrieval, self.segment)
