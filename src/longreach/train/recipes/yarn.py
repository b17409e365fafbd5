"""``yarn``: YaRN scaling, then fine-tuning (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large
Language Models", arXiv 2309.00071).

NTK-by-parts interpolation: with r_i = L / lambda_i the rotations of pair i inside the native window L, pairs that
turn fewer than ``beta_slow`` times are interpolated (theta_i / s), pairs that turn more than ``beta_fast`` times are
kept, a linear ramp blends those in between; cos and sin are multiplied by mscale = 0.1 ln s + 1 (attention
temperature). YaRN's short recipe fine-tunes a few hundred steps at the scaled length (Llama 2: 400 steps, s = 16).
Set through transformers' ``yarn`` rope_type, so transformers' own function computes the frequencies and the saved
folder keeps them; its ``max_position_embeddings`` becomes s * L.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import Recipe, register_recipe


@register_recipe
@dataclass(frozen=True)
class Yarn(Recipe):
    """YaRN (transformers' ``yarn`` rope_type) with scale ``factor``, then fine-tune at the scaled length."""

    factor: float = field(default=2.0, metadata={"help": "scale s: the window grows from L to s*L"})
    original_max: int = field(default=0, metadata={"help": "pre-extension window L (0: the model's)"})
    beta_fast: float = field(default=32.0, metadata={"help": "rotations above which pairs are kept"})
    beta_slow: float = field(default=1.0, metadata={"help": "rotations below which pairs are interpolated"})

    name: ClassVar[str] = "yarn"
    summary: ClassVar[str] = "YaRN scaling (NTK-by-parts + temperature), then a short fine-tune"
    paper: ClassVar[str] = "Peng et al. 2023 (YaRN)"
    example: ClassVar[str] = "yarn:factor=2"

    def __post_init__(self) -> None:
        require(self.factor >= 1.0, f"yarn: factor must be >= 1; got {self.factor:g}")
        require(self.original_max >= 0, f"yarn: original_max must be >= 0; got {self.original_max}")
        require(self.beta_fast > self.beta_slow > 0, f"yarn: need beta_fast > beta_slow > 0; got {self.beta_fast:g}, "
                f"{self.beta_slow:g}")  # fmt: skip

    def rope_updates(self, native: int) -> dict[str, Any]:
        """The rope_parameters entries for a model whose window is ``native``."""
        return {
            "rope_type": "yarn",
            "factor": self.factor,
            "original_max_position_embeddings": self.original_max or native,
            "beta_fast": self.beta_fast,
            "beta_slow": self.beta_slow,
        }

    def prepare(self, model: Any, length: int) -> None:
        native = adapter.native_context_length(model.config)
        original = self.original_max or native
        adapter.set_rope_parameters(model, self.rope_updates(native), max(round(original * self.factor), length))
