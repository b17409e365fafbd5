"""``truncated``: Giraffe's truncated basis (Pal et al. 2023, arXiv 2308.10882, ``models/interpolate.py``).

With b = 2*pi/L_t, a = b/8 and rho = 2*pi/(16*L_t): theta_i' = theta_i if theta_i >= b (at least one full
turn inside L_t); rho if a <= theta_i < b (slow pairs share one tiny frequency); 0 if theta_i < a (the
slowest pairs stop rotating, so they carry no position at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_truncated(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) with slow pairs set to rho or 0; attention factor 1."""
    params = parameters(config, layer_type)
    theta = base_inv_freq(params["rope_theta"], rotary_dim(config, params), device)
    length = params["truncate_length"]
    cutoff = 2 * math.pi / length
    low = torch.full_like(theta, 2 * math.pi / (16 * length))
    truncated = torch.where(theta < cutoff, low, theta)
    return torch.where(theta < cutoff / 8, torch.zeros_like(theta), truncated), 1.0


@register
@dataclass(frozen=True)
class Truncated(PositionMethod):
    """Truncate wavelengths at ``length`` tokens (0: the native window)."""

    length: int = field(default=0, metadata={"help": "L_t: wavelengths longer than this are truncated (0: L)"})

    name: ClassVar[str] = "truncated"
    summary: ClassVar[str] = "Giraffe truncated basis: slow pairs -> one tiny frequency or none"
    paper: ClassVar[str] = "Pal et al. 2023, Giraffe"
    rope_function = compute_truncated

    def __post_init__(self) -> None:
        require(self.length >= 0, f"truncated: length must be >= 0; got {self.length}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {"rope_type": "truncated", "truncate_length": self.length or native}
