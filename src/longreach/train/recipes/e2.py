"""``e2``: E²-LLM, one training run at a short length that serves many windows (Liu et al., ACL Findings 2024,
"E²-LLM: Efficient and Extreme Length Extension of Large Language Models", arXiv 2401.06951).

Shapes: ``b`` rows, ``t`` = R the training length, ``d/2`` rotary pairs.
```
g ~ U{min_scale .. max_scale}, one per batch              scale augmentation: position interpolation m / g
l1 ~ U{1 .. R-1}, o ~ U{0 .. (g-1) R}, one pair per row    position-index augmentation (PoSE-like)
position_ids = [0 .. l1-1] ++ [l1 + o .. R - 1 + o]       (b, t): max position R - 1 + o < g R
angles       = position_ids * theta / g                   theta (d/2,) the model's own frequencies
```
Within each segment the distances are unchanged; across the cut they grow by o, so one short row shows the
relative distances of a g R window at the density of scale g. Inference picks g = L_eval / R:
``longreach eval --model DIR --method linear:factor=g`` (position interpolation by g, the same rotation as in
training). ``finish`` writes ``e2.json`` with R and the trained scales. The paper's exact scale distribution is
not published; integers from 1 to ``max_scale`` are drawn uniformly here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import Document, Recipe, TrainBatch, causal_lm, causal_lm_loss, pack, register_recipe

SCALE = "e2_scale"  # extras key: the batch's scale g, a () float tensor


def e2_positions(length: int, scale: int, rng: np.random.Generator, offset: bool = True) -> np.ndarray:
    """Position ids (length,) of one row: two segments, the second shifted by o ~ U{0 .. (g-1) length}."""
    positions = np.arange(length)
    if offset and scale > 1 and length > 1:
        cut = int(rng.integers(1, length))
        positions[cut:] += int(rng.integers(0, (scale - 1) * length + 1))
    return positions


@contextlib.contextmanager
def interpolated(model: Any, scale: float) -> Iterator[None]:
    """Rotate positions m as m / ``scale`` (position interpolation) for the block: the model's own inverse
    frequencies divided by the scale, angles in float32. Restored on exit."""
    lm = causal_lm(model)
    module = adapter.rotary_module(lm)
    layer_types = adapter.long_range_layer_types(lm.config)

    def provider(seq_len: int, layer_type: str | None) -> tuple[torch.Tensor, float]:
        prefix = f"{layer_type}_" if layer_type is not None else ""
        inv_freq = getattr(module, f"{prefix}inv_freq")
        scaling = getattr(module, f"{prefix}attention_scaling", getattr(module, "attention_scaling", 1.0))
        return inv_freq.float() / scale, scaling

    with adapter.patched_rope(lm, provider, layer_types):
        yield


@register_recipe
@dataclass(frozen=True)
class E2(Recipe):
    """Scale and position-offset augmentation at one short training length."""

    max_scale: int = field(default=8, metadata={"help": "largest interpolation scale g sampled (eval up to g x R)"})
    min_scale: int = field(default=1, metadata={"help": "smallest scale g sampled"})
    offset: bool = field(default=True, metadata={"help": "position-index augmentation (a shifted second segment)"})
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    name: ClassVar[str] = "e2"
    summary: ClassVar[str] = "E2-LLM: short training with sampled PI scales and position offsets; eval linear:factor=g"
    paper: ClassVar[str] = "Liu et al. 2024, E2-LLM (ACL Findings)"
    example: ClassVar[str] = "e2:max_scale=4"

    def __post_init__(self) -> None:
        require(self.min_scale >= 1, f"e2: min_scale must be >= 1; got {self.min_scale}")
        require(
            self.max_scale >= self.min_scale,
            f"e2: max_scale must be >= min_scale ({self.min_scale}); got {self.max_scale}",
        )

    def prepare(self, model: Any, length: int) -> None:
        self._state["length"] = length

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        for row in pack(documents, length, rng, masked=False):
            scale = int(rng.integers(self.min_scale, self.max_scale + 1))
            positions = [e2_positions(length, scale, rng, self.offset) for _ in range(row.input_ids.shape[0])]
            row.position_ids = torch.from_numpy(np.stack(positions))
            row.extras[SCALE] = torch.tensor(float(scale))
            yield row

    def loss(self, model: Any, batch: TrainBatch) -> torch.Tensor:
        with interpolated(model, float(batch.extras[SCALE])):
            return causal_lm_loss(model, batch)

    def finish(self, model: Any, out: Path) -> None:
        length = self._state.get("length")
        note = {
            "recipe": self.spec,
            "train_length": length,
            "scales": list(range(self.min_scale, self.max_scale + 1)),
            "eval": "longreach eval --method linear:factor=g with g = eval length / train_length, g <= max_scale",
        }
        (out / "e2.json").write_text(json.dumps(note, indent=2) + "\n")
