"""``llama3``: Llama 3.1's frequency-dependent scaling (Meta 2024; transformers' ``llama3`` type).

With wavelength lambda_i = 2*pi/theta_i, low = L/low_freq_factor, high = L/high_freq_factor: pairs with
lambda > low are divided by s, pairs with lambda < high are kept, and in between
theta' = (1 - a) * theta/s + a * theta with a = (L/lambda - low_freq_factor) / (high_freq_factor - low_freq_factor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_llama3(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) scaled by wavelength band; attention factor 1."""
    params = parameters(config, layer_type)
    theta = base_inv_freq(params["rope_theta"], rotary_dim(config, params), device)
    factor, low_factor, high_factor = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    window = params["original_max_position_embeddings"]
    wavelength = 2 * math.pi / theta
    scaled = torch.where(wavelength > window / low_factor, theta / factor, theta)
    blend = (window / wavelength - low_factor) / (high_factor - low_factor)
    smoothed = (1 - blend) * scaled / factor + blend * scaled
    medium = (wavelength >= window / high_factor) & (wavelength <= window / low_factor)
    return torch.where(medium, smoothed, scaled), 1.0


@register
@dataclass(frozen=True)
class Llama3(PositionMethod):
    """Llama 3.1 scaling; ``original_max=0`` means the model's native window."""

    factor: float = field(default=8.0, metadata={"help": "scale of the low-frequency band"})
    low_freq_factor: float = field(default=1.0, metadata={"help": "wavelengths above L/this are scaled"})
    high_freq_factor: float = field(default=4.0, metadata={"help": "wavelengths below L/this are kept"})
    original_max: int = field(default=0, metadata={"help": "pre-extension window L (0: the model's)"})

    name: ClassVar[str] = "llama3"
    summary: ClassVar[str] = "Llama 3.1 band scaling: low frequencies / s, high kept, smooth in between"
    paper: ClassVar[str] = "Meta 2024, Llama 3.1"
    rope_function = compute_llama3

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"llama3: factor must be >= 1; got {self.factor:g}")
        require(self.high_freq_factor > self.low_freq_factor > 0, "llama3: need high_freq_factor > low_freq_factor > 0")
        require(self.original_max >= 0, f"llama3: original_max must be >= 0; got {self.original_max}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {
            "rope_type": "llama3",
            "factor": self.factor,
            "low_freq_factor": self.low_freq_factor,
            "high_freq_factor": self.high_freq_factor,
            "original_max_position_embeddings": self.original_max or native,
        }
