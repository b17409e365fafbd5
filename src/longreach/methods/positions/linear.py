"""``linear``: Position Interpolation (Chen et al. 2023, arXiv 2306.15595).

Positions m -> m/s, i.e. theta_i' = theta_i / s for every pair. Same as transformers' ``linear`` type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_linear(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) = theta / factor; attention factor 1."""
    params = parameters(config, layer_type)
    return base_inv_freq(params["rope_theta"], rotary_dim(config, params), device) / params["factor"], 1.0


@register
@dataclass(frozen=True)
class Linear(PositionMethod):
    """Position interpolation by ``factor`` (use target length / native window)."""

    factor: float = field(default=2.0, metadata={"help": "scale s: positions are divided by s"})

    name: ClassVar[str] = "linear"
    summary: ClassVar[str] = "position interpolation: theta_i / s"
    paper: ClassVar[str] = "Chen et al. 2023, PI"
    rope_function = compute_linear

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"linear: factor must be >= 1; got {self.factor:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {"rope_type": "linear", "factor": self.factor}
