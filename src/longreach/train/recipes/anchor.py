"""``anchor``: AnchorAttention (Wang et al. 2024, "When Precision Meets Position: BFloat16 Breaks Down RoPE in
Long-Context Training", arXiv 2411.13476; code ``haonan3/AnchorContext``, its FlexAttention variant).

Shapes: ``b`` rows, ``t`` the training length, ``q``/``k`` query and key positions.
```
row          = [anchor] + documents packed into t - 1 tokens                 input_ids (b, t)
document_ids = 0 for the anchor, 1, 2, ... for the document pieces            (b, t)
mask(q, k)   = k <= q  and  (doc(q) == doc(k)  or  doc(k) == 0)               (b, 1, q, k) bool
positions    = 0 .. t-1 over the whole row (not restarted per document)       (b, t)
```
One anchor token (the model's BOS, or EOS for tokenizers without one) opens the row at position 0 and every
document attends to it; cross-document attention is masked. Positions keep running across documents, so every
token sees the anchor at its full distance and the model still trains on long relative positions. A leading
anchor token of a document is dropped (the paper removes per-document BOS in this variant). Not scored: the
anchor and each document piece's first token (nothing of its own document precedes it).

The paper's finding is that RoPE's relative property breaks in bf16 and grows with length; the recipe also
keeps RoPE in float32: ``prepare`` recomputes the rotary inverse frequencies in float32 when a cast of the
model rounded them to bf16 (a bf16 ``inv_freq`` puts angles off by whole turns at long positions), so angles are
computed from float32 positions and frequencies and cast to the model dtype once, as cos/sin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from longreach.errors import LongreachError
from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import (
    IGNORE,
    Document,
    Recipe,
    TrainBatch,
    causal_lm,
    causal_lm_loss,
    document_mask,
    pack,
    register_recipe,
)


def anchor_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Same-document causal attention plus the anchor: document_ids (b, t), the anchor's id 0 -> (b, 1, q, k)."""
    is_anchor = (document_ids == 0)[:, None, None, :]  # (b, 1, 1, k)
    t = document_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()  # (q, k)
    return document_mask(document_ids) | (is_anchor & causal)


def anchored(batch: TrainBatch, anchor: int) -> TrainBatch:
    """A document-masked row of t - 1 tokens (``extras["document_ids"]``) -> its anchored row of t tokens."""
    b = batch.input_ids.shape[0]
    column = torch.full((b, 1), anchor, dtype=batch.input_ids.dtype)
    document_ids = torch.cat([torch.zeros((b, 1), dtype=torch.long), batch.extras["document_ids"] + 1], dim=1)
    t = document_ids.shape[1]
    return TrainBatch(
        input_ids=torch.cat([column, batch.input_ids], dim=1),
        labels=torch.cat([torch.full((b, 1), IGNORE, dtype=batch.labels.dtype), batch.labels], dim=1),
        position_ids=torch.arange(t).expand(b, t).clone(),
        attention_mask=anchor_mask(document_ids),
        extras={"document_ids": document_ids},
    )


def without_leading(document: Document, token: int) -> Document:
    """``document`` without its first token when that token is the anchor."""
    if not document.tokens or document.tokens[0] != token:
        return document
    return Document(document.tokens[1:], max(0, document.loss_start - 1), document.kind)


def float32_rope(model: Any) -> bool:
    """Make the rotary module's inverse frequencies float32 again, recomputed exactly by transformers' own init
    function, wherever a cast of the model rounded them (``model.to(torch.bfloat16)`` casts buffers). Returns
    whether anything changed."""
    module = adapter.rotary_module(causal_lm(model))
    stale = [name for name, buffer in module.named_buffers(recurse=False) if name.endswith("inv_freq")]
    stale = [name for name in stale if getattr(module, name).dtype != torch.float32]
    if not stale:
        return False
    try:
        fresh = type(module)(module.config)
    except TypeError as exc:
        raise LongreachError(f"anchor: cannot rebuild the rotary embedding {type(module).__name__}: {exc}") from None
    for name in stale:
        setattr(module, name, getattr(fresh, name).to(device=getattr(module, name).device, dtype=torch.float32))
    return True


def model_anchor(model: Any) -> int:
    """The model's BOS id, else its EOS id (AnchorContext's choice)."""
    lm = causal_lm(model)
    sources = (adapter.text_config(lm.config), getattr(lm, "generation_config", None))
    for name in ("bos_token_id", "eos_token_id"):
        value = next((getattr(s, name) for s in sources if getattr(s, name, None) is not None), None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    raise LongreachError("anchor: the model declares neither a BOS nor an EOS token; give anchor:token=ID")


@register_recipe
@dataclass(frozen=True)
class Anchor(Recipe):
    """Documents behind one shared anchor token, cross-document attention masked, RoPE kept in float32."""

    token: int = field(default=-1, metadata={"help": "anchor token id (-1: the model's BOS, else its EOS)"})
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    name: ClassVar[str] = "anchor"
    summary: ClassVar[str] = "AnchorAttention: shared anchor token, cross-document attention masked, fp32 RoPE"
    paper: ClassVar[str] = "Wang et al. 2024, When Precision Meets Position"

    def __post_init__(self) -> None:
        require(self.token >= -1, f"anchor: token must be a token id or -1; got {self.token}")

    def anchor(self) -> int:
        if self.token >= 0:
            return self.token
        if "anchor" not in self._state:
            raise LongreachError("anchor: the anchor token is the model's; call prepare(model, length) first")
        return int(self._state["anchor"])

    def prepare(self, model: Any, length: int) -> None:
        self._state["anchor"] = self.token if self.token >= 0 else model_anchor(model)
        float32_rope(model)

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        require(length >= 3, f"anchor: training length must be at least 3 tokens; got {length}")
        token = self.anchor()
        stripped = (without_leading(d, token) for d in documents)
        return (anchored(row, token) for row in pack(stripped, length - 1, rng, masked=True))

    def loss(self, model: Any, batch: TrainBatch) -> torch.Tensor:
        float32_rope(model)  # a no-op unless something cast the model since prepare
        return causal_lm_loss(model, batch)
