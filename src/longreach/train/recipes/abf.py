"""``abf``: adjusted base frequency, then continued training at the target length (Xiong et al. 2023, "Effective
Long-Context Scaling of Foundation Models", Llama 2 Long).

RoPE's inverse frequencies theta_i = b^(-2i/d), i = 0 .. d/2-1 (d: the rotary head dimension) are recomputed with
a larger base b' (Llama 2 Long: 10,000 -> 500,000), which slows every rotation and relieves RoPE's long-distance
decay; nothing else in the architecture changes. The paper then continues pretraining on long sequences. The saved
config carries the new ``rope_theta`` (a plain ``default`` rope_type), so any transformers loader reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import Recipe, register_recipe


@register_recipe
@dataclass(frozen=True)
class Abf(Recipe):
    """Raise the RoPE base to ``theta`` (or the model's base times ``scale``), then train at the target length."""

    theta: float = field(default=500000.0, metadata={"help": "new RoPE base (Llama 2 Long: 500000)"})
    scale: float = field(default=0.0, metadata={"help": "when > 0: the model's base times this, instead of theta"})

    name: ClassVar[str] = "abf"
    summary: ClassVar[str] = "raise the RoPE base (ABF), then continue training at the target length"
    paper: ClassVar[str] = "Xiong et al. 2023 (Effective Long-Context Scaling)"
    example: ClassVar[str] = "abf:theta=200000"

    def __post_init__(self) -> None:
        require(self.theta > 0, f"abf: theta must be > 0; got {self.theta:g}")
        require(self.scale >= 0, f"abf: scale must be >= 0 (0: use theta); got {self.scale:g}")

    def base(self, model: Any) -> float:
        """The new base b' for ``model``."""
        if self.scale:
            layer_type = adapter.long_range_layer_types(model.config)[0]
            return float(adapter.rope_parameters(model.config, layer_type)["rope_theta"]) * self.scale
        return self.theta

    def prepare(self, model: Any, length: int) -> None:
        native = adapter.native_context_length(model.config)
        adapter.set_rope_parameters(model, {"rope_theta": self.base(model)}, max(native, length))
