"""``plain``: continued training as it is, the baseline every recipe is compared against.

Concat-and-chunk at the training length (documents concatenated and cut every ``length`` tokens, plain causal
attention across documents), the causal language-model loss, no change to the model: the "continual pretraining
on long data" of Xiong et al. 2023 without its RoPE change, and the concat-and-chunk baseline of Dataset
Decomposition (Pouransari et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from longreach.train.recipe import Recipe, register_recipe


@register_recipe
@dataclass(frozen=True)
class Plain(Recipe):
    """Concat-and-chunk continued training with no model change."""

    name: ClassVar[str] = "plain"
    summary: ClassVar[str] = "continued training, concat-and-chunk, no model change (the baseline)"
    paper: ClassVar[str] = "Xiong et al. 2023; Pouransari et al. 2024 (baseline)"
