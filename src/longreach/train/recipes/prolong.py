"""``prolong``: ProLong's data recipe (Gao, Wettig, Yen, Chen 2024, "How to Train Long-Context Language Models
(Effectively)", arXiv 2410.02660).

Long documents (code repositories, books: 60% of tokens in stage 1) mixed with short, high-quality data (40%:
FineWeb-Edu, Wikipedia, Tulu-v2 instructions, ...), packed into rows of the training length with document masks:
no attention across documents (variable-length attention in the paper; here a (b, 1, t, t) mask that the forward
pass runs as one causal pass per document, :func:`longreach.train.recipe.hidden_states`) and positions restarting
at 0 in every document. The loss is token-averaged; logits are computed in blocks. Stage 1 also raises
the RoPE base (Llama-3-8B: 500,000 -> 8,000,000); ``theta`` does so here when set. Short data comes from local
sources: ``--data text:DIR+short:passkey,vt`` (short task samples at 256-1024 tokens) or ``short:DIR`` (a folder of
short texts or prompt/response ``.jsonl`` records), see :mod:`longreach.train.data`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import Document, Recipe, TrainBatch, pack, register_recipe


@register_recipe
@dataclass(frozen=True)
class ProLong(Recipe):
    """Long and short documents at ``long_share`` : 1 - ``long_share`` of tokens, packed with document masks."""

    long_share: float = field(default=0.6, metadata={"help": "share of tokens from long documents (paper: 0.6)"})
    theta: float = field(default=0.0, metadata={"help": "new RoPE base when > 0 (paper, Llama-3: 8e6)"})

    name: ClassVar[str] = "prolong"
    summary: ClassVar[str] = "long + short data (60/40 by tokens), packed with document masks"
    paper: ClassVar[str] = "Gao et al. 2024 (ProLong)"
    example: ClassVar[str] = "prolong:long_share=0.5"

    def __post_init__(self) -> None:
        require(0 < self.long_share <= 1, f"prolong: long_share must be in (0, 1]; got {self.long_share:g}")
        require(self.theta >= 0, f"prolong: theta must be >= 0 (0: keep the model's base); got {self.theta:g}")

    def mix(self) -> dict[str, float]:
        return {"long": self.long_share, "short": 1.0 - self.long_share}

    def prepare(self, model: Any, length: int) -> None:
        if self.theta:
            native = adapter.native_context_length(model.config)
            adapter.set_rope_parameters(model, {"rope_theta": self.theta}, max(native, length))

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        return pack(documents, length, rng, masked=True)
