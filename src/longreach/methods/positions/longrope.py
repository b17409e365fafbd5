"""``longrope``: per-pair rescale factors given by the user (Ding et al. 2024, LongRoPE, arXiv 2402.13753).

theta_i' = theta_i / lambda_i with lambda = ``long_factor`` when the length read exceeds L, else
``short_factor``; attention factor sqrt(1 + ln s / ln L). LongRoPE finds the factors by evolutionary search;
longreach applies given lists (as transformers does), one factor per rotary pair (d/2 of them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from longreach.errors import LongreachError
from longreach.methods.positions.base import PositionMethod, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel


def compute_longrope(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) divided pairwise by the short or long factors; attention factor from s and L."""
    params = parameters(config, layer_type)
    window = params["original_max_position_embeddings"]
    factor = params.get("factor") or config.max_position_embeddings / window
    attention = params.get("attention_factor") or (
        math.sqrt(1 + math.log(factor) / math.log(window)) if factor > 1 else 1.0
    )
    chosen = params["long_factor"] if seq_len and seq_len > window else params["short_factor"]
    factors = torch.tensor(chosen, dtype=torch.float32, device=device)
    dim = rotary_dim(config, params)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    return 1.0 / (factors * params["rope_theta"] ** exponents), attention


@register
@dataclass(frozen=True)
class LongRope(PositionMethod):
    """LongRoPE with user-given factor lists, written ``short_factor=1/1/1.2/...`` (d/2 numbers each)."""

    long_factor: tuple[float, ...] = field(default=(), metadata={"help": "d/2 factors used beyond the window"})
    short_factor: tuple[float, ...] = field(default=(), metadata={"help": "d/2 factors inside it (default all 1)"})
    factor: float = field(default=0.0, metadata={"help": "target scale s for the attention factor (0: none)"})
    original_max: int = field(default=0, metadata={"help": "pre-extension window L (0: the model's)"})

    name: ClassVar[str] = "longrope"
    reads_length: ClassVar[bool] = True
    summary: ClassVar[str] = "LongRoPE: per-pair factor lists (given), long set beyond the window"
    paper: ClassVar[str] = "Ding et al. 2024"
    example: ClassVar[str] = "longrope:long_factor=1/1/1/1.5/2/3/4/4"
    rope_function = compute_longrope

    def __post_init__(self) -> None:
        require(bool(self.long_factor), "longrope: give long_factor as d/2 numbers joined by '/', e.g. 1/1.5/2/...")
        require(all(f > 0 for f in self.long_factor + self.short_factor), "longrope: factors must be > 0")
        require(self.factor == 0 or self.factor >= 1, f"longrope: factor must be 0 or >= 1; got {self.factor:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {
            "rope_type": "longrope",
            "long_factor": list(self.long_factor),
            "short_factor": list(self.short_factor or (1.0,) * len(self.long_factor)),
            "factor": self.factor or None,
            "original_max_position_embeddings": self.original_max or native,
        }

    def _check(self, loaded: LoadedModel) -> None:
        from longreach.models import adapter

        layer_type = adapter.long_range_layer_types(loaded.model.config)[0]
        config = adapter.text_config(loaded.model.config)
        pairs = rotary_dim(config, adapter.rope_parameters(config, layer_type)) // 2
        for name in ("long_factor", "short_factor"):
            given = len(getattr(self, name))
            if given and given != pairs:
                raise LongreachError(f"longrope: {name} has {given} numbers; this model has {pairs} rotary pairs")

    def inv_freq(self, loaded: LoadedModel, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        self._check(loaded)
        return super().inv_freq(loaded, seq_len)

    def applied(self, loaded: LoadedModel):  # type: ignore[override]
        self._check(loaded)
        return super().applied(loaded)
