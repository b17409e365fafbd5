"""``pi``: Position Interpolation, then fine-tuning (Chen et al. 2023, "Extending Context Window of Large Language
Models via Positional Interpolation").

Position m is read as m / s, i.e. every inverse frequency theta_i = b^(-2i/d) becomes theta_i / s, so s times the
native window L fits the angles the model saw in training; the paper then fine-tunes about 1000 steps at the
extended length. Set through transformers' ``linear`` rope_type (``factor`` = s), so the saved folder keeps it and
its ``max_position_embeddings`` becomes s * L.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import Recipe, register_recipe


@register_recipe
@dataclass(frozen=True)
class Pi(Recipe):
    """Linear position interpolation by ``factor`` (transformers' ``linear`` rope_type), then fine-tune."""

    factor: float = field(default=2.0, metadata={"help": "scale s: the window grows from L to s*L"})

    name: ClassVar[str] = "pi"
    summary: ClassVar[str] = "position interpolation (linear RoPE scaling by s), then fine-tune"
    paper: ClassVar[str] = "Chen et al. 2023 (Position Interpolation)"
    example: ClassVar[str] = "pi:factor=2"

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"pi: factor must be >= 1; got {self.factor:g}")

    def prepare(self, model: Any, length: int) -> None:
        native = adapter.native_context_length(model.config)
        updates = {"rope_type": "linear", "factor": self.factor}
        adapter.set_rope_parameters(model, updates, max(round(native * self.factor), length))
