"""``ntk``: static NTK-aware scaling (bloc97, 2023).

b' = b * s^(d/(d-2)): the highest frequency is unchanged and the lowest is divided by exactly s.
transformers has no static type for it; it equals transformers' ``dynamic`` rule with factor 1 evaluated
at seq_len = s * L, which is the oracle in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from longreach.methods.positions.base import PositionMethod, base_inv_freq, parameters, rotary_dim
from longreach.methods.spec import register
from longreach.params import require


def compute_ntk(
    config: Any, device: Any = None, seq_len: int | None = None, layer_type: str | None = None
) -> tuple[torch.Tensor, float]:
    """inv_freq (d/2,) for base b * s^(d/(d-2)); attention factor 1."""
    params = parameters(config, layer_type)
    dim = rotary_dim(config, params)
    base = params["rope_theta"] * params["factor"] ** (dim / (dim - 2))
    return base_inv_freq(base, dim, device), 1.0


@register
@dataclass(frozen=True)
class Ntk(PositionMethod):
    """NTK-aware base change for a scale ``factor``."""

    factor: float = field(default=2.0, metadata={"help": "scale s (target length / native window)"})

    name: ClassVar[str] = "ntk"
    summary: ClassVar[str] = "static NTK-aware scaling: base * s^(d/(d-2))"
    paper: ClassVar[str] = "bloc97 2023"
    rope_function = compute_ntk

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"ntk: factor must be >= 1; got {self.factor:g}")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {"rope_type": "ntk", "factor": self.factor}
