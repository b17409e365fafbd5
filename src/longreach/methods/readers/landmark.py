"""``landmark``: training-free block retrieval in the spirit of Landmark Attention (Mohtashami & Jaggi 2023,
arXiv 2305.16300): blocks are represented by the mean of the model's own keys instead of trained landmark
tokens; each head retrieves its top blocks and reads them with the sink, previous and current block at
contiguous positions. Kernel: :mod:`longreach.methods.readers.blocks`.
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
class Landmark(ReaderMethod):
    """Per-head top-k block retrieval with mean-key block summaries."""

    block: int = field(default=256, metadata={"help": "block size in tokens"})
    blocks: int = field(default=16, metadata={"help": "blocks each head reads (incl. sink, previous, current)"})
    segment: int = field(default=4096, metadata={"help": "prefill tokens per forward (a multiple of block)"})

    name: ClassVar[str] = "landmark"
    summary: ClassVar[str] = "block retrieval by mean-key landmarks (training-free Landmark Attention)"
    paper: ClassVar[str] = "Mohtashami & Jaggi 2023, Landmark Attention"

    def __post_init__(self) -> None:
        require(self.block >= 1 and self.blocks >= 3, "landmark: need block >= 1 and blocks >= 3")
        require(self.segment % self.block == 0, f"landmark: segment must be a multiple of block ({self.block})")

    def conflict_with(self, other: Method) -> str | None:
        return "both replace the attention kernel" if other.kind == "attention" else super().conflict_with(other)

    def read(self, backend: HFBackend, request: Request, inner: MethodStack) -> Generation:
        retrieval = BlockRetrieval(self.block, self.blocks, "mean")
        return read_with_blocks(backend, request, inner, retrieval, self.segment)
