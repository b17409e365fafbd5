"""``power``: Giraffe's power scaling of the basis (Pal et al. 2023, arXiv 2308.10882).

theta_i' = theta_i * (1 - i/(d/2))^p for pair i = 0 .. d/2-1: fast pairs stay nearly unchanged, slow pairs
are stretched most (the paper reports p = 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_power(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) times (1 - i/(d/2))^p; attention factor 1."""
    params = parameters(config, layer_type)
    theta = base_inv_freq(params["rope_theta"], rotary_dim(config, params), device)
    pairs = theta.shape[0]
    decay = (1.0 - torch.arange(pairs, dtype=torch.float32, device=device) / pairs) ** params["power"]
    return theta * decay, 1.0


@register
@dataclass(frozen=True)
class Power(PositionMethod):
    """Power-law stretch of the slow pairs with exponent ``p``."""

    p: float = field(default=0.5, metadata={"help": "exponent: theta_i * (1 - i/(d/2))^p"})

    name: ClassVar[str] = "power"
    summary: ClassVar[str] = "Giraffe power scaling: theta_i * (1 - 2i/d)^p"
    paper: ClassVar[str] = "Pal et al. 2023, Giraffe"
    rope_function = compute_power

    def __post_init__(self) -> None:
        require(self.p > 0, f"power: p must be > 0; got {self.p:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {"rope_type": "power", "power": self.p}
