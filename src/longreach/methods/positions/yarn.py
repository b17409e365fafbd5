"""``yarn``: YaRN, NTK-by-parts interpolation plus an attention temperature (Peng et al. 2023, arXiv 2309.00071).

In dimension space (as transformers implements it): with corr(n) = d * ln(L / (2*pi*n)) / (2 ln b),
low = floor(corr(beta_fast)), high = ceil(corr(beta_slow)) clamped to [0, d-1], the extrapolation weight
of pair i is e_i = 1 - clamp((i - low) / (high - low), 0, 1) and
theta_i' = theta_i / s * (1 - e_i) + theta_i * e_i. Attention temperature: cos and sin are multiplied by
mscale = 0.1 ln s + 1 (so logits scale by mscale^2), unless ``attention_factor`` is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def _correction_dim(rotations: float, dim: int, base: float, window: int) -> float:
    """The (fractional) dimension index whose wavelength fits ``rotations`` times in ``window``."""
    return (dim * math.log(window / (rotations * 2 * math.pi))) / (2 * math.log(base))


def compute_yarn(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) blended between theta/s (slow pairs) and theta (fast pairs); attention factor mscale."""
    params = parameters(config, layer_type)
    dim = rotary_dim(config, params)
    base, factor = params["rope_theta"], params["factor"]
    window = params["original_max_position_embeddings"]
    attention = params.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
    low = _correction_dim(params.get("beta_fast") or 32, dim, base, window)
    high = _correction_dim(params.get("beta_slow") or 1, dim, base, window)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a one-point ramp would divide by zero
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1).to(device)
    extrapolation = 1 - ramp
    theta = base_inv_freq(base, dim, device)
    return (theta / factor) * (1 - extrapolation) + theta * extrapolation, attention


@register
@dataclass(frozen=True)
class Yarn(PositionMethod):
    """YaRN with its temperature; ``original_max=0`` means the model's native window."""

    factor: float = field(default=2.0, metadata={"help": "scale s (target length / native window)"})
    original_max: int = field(default=0, metadata={"help": "pre-extension window L (0: the model's)"})
    beta_fast: float = field(default=32.0, metadata={"help": "rotations above which pairs are kept"})
    beta_slow: float = field(default=1.0, metadata={"help": "rotations below which pairs are interpolated"})
    attention_factor: float = field(default=0.0, metadata={"help": "cos/sin multiplier (0: 0.1 ln s + 1)"})
    truncate: bool = field(default=True, metadata={"help": "round the ramp bounds to whole dimensions"})

    name: ClassVar[str] = "yarn"
    summary: ClassVar[str] = "YaRN: NTK-by-parts interpolation + attention temperature"
    paper: ClassVar[str] = "Peng et al. 2023"
    rope_function = compute_yarn

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"yarn: factor must be >= 1; got {self.factor:g}")
        require(self.original_max >= 0, f"yarn: original_max must be >= 0; got {self.original_max}")
        require(self.beta_fast > self.beta_slow > 0, "yarn: need beta_fast > beta_slow > 0")
        require(self.attention_factor >= 0, f"yarn: attention_factor must be >= 0; got {self.attention_factor:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {
            "rope_type": "yarn",
            "factor": self.factor,
            "original_max_position_embeddings": self.original_max or native,
            "beta_fast": self.beta_fast,
            "beta_slow": self.beta_slow,
            "attention_factor": self.attention_factor or None,
            "truncate": self.truncate,
        }
