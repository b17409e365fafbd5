"""``dynamic``: dynamic NTK scaling (emozilla 2023; transformers' ``dynamic`` rule).

For the length l being read (l >= L): b' = b * (s*l/L - (s-1))^(d/(d-2)); inside the window the model is
unchanged. Unlike transformers, longreach fixes l for a whole sequence (the prefill length): decode steps
do not move the base under keys already in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_dynamic(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) for base b * (s*l/L - (s-1))^(d/(d-2)) with l = max(seq_len, L); factor 1."""
    params = parameters(config, layer_type)
    dim = rotary_dim(config, params)
    window = config.max_position_embeddings
    length = max(seq_len or window, window)
    factor = params["factor"]
    base = params["rope_theta"] * ((factor * length / window) - (factor - 1)) ** (dim / (dim - 2))
    return base_inv_freq(base, dim, device), 1.0


@register
@dataclass(frozen=True)
class Dynamic(PositionMethod):
    """Dynamic NTK: the base grows with the length read, and only beyond the native window."""

    factor: float = field(default=2.0, metadata={"help": "scale s in b*(s*l/L-(s-1))^(d/(d-2))"})

    name: ClassVar[str] = "dynamic"
    reads_length: ClassVar[bool] = True
    summary: ClassVar[str] = "dynamic NTK: base grows with the length read, identity inside the window"
    paper: ClassVar[str] = "emozilla 2023"
    rope_function = compute_dynamic

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"dynamic: factor must be >= 1; got {self.factor:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {"rope_type": "dynamic", "factor": self.factor}
