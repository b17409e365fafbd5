"""``abf``: adjusted base frequency, i.e. a larger RoPE base (Xiong et al. 2023, "Llama 2 Long").

theta_i = b'^(-2i/d) with the new base b' (Llama 2 Long: 10,000 -> 500,000). The paper pairs it with
continual pretraining; zero-shot it behaves like NTK scaling and hurts short inputs a little.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_abf(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) for base ``abf_theta`` (or rope_theta x ``abf_scale``); attention factor 1."""
    params = parameters(config, layer_type)
    base = params.get("abf_theta") or params["rope_theta"] * params.get("abf_scale", 1.0)
    return base_inv_freq(base, rotary_dim(config, params), device), 1.0


@register
@dataclass(frozen=True)
class Abf(PositionMethod):
    """Replace the RoPE base by ``theta`` (``scale`` multiplies the model's base when theta is 0)."""

    theta: float = field(default=0.0, metadata={"help": "new RoPE base (0: the model's base x scale)"})
    scale: float = field(default=4.0, metadata={"help": "multiplier of the model's base when theta is 0"})

    name: ClassVar[str] = "abf"
    summary: ClassVar[str] = "raise the RoPE base frequency (Llama 2 Long's ABF), zero-shot"
    paper: ClassVar[str] = "Xiong et al. 2023"
    rope_function = compute_abf

    def __post_init__(self) -> None:
        require(self.theta >= 0, f"abf: theta must be >= 0; got {self.theta:g}")
        require(self.scale > 0, f"abf: scale must be > 0; got {self.scale:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {"rope_type": "abf", "abf_theta": self.theta, "abf_scale": self.scale}
