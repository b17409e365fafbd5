"""``clex``: CLEX, continuous per-frequency RoPE scaling learned as a neural ODE while fine-tuning (Chen et al.,
ICLR 2024, "CLEX: Continuous Length Extrapolation for Large Language Models", arXiv 2310.16450).

Shapes: ``b`` rows, ``t`` the training length, ``d/2`` rotary pairs; L the model's native window.
```
s = max(1, t // L)                                 training length in native windows
tau ~ U{1 .. max_factor}, one per batch            the sampled scale (the paper's t)
p   = sorted t distinct integers of                position_ids (b, t)
      [0, max(t, L) tau), with 0 and the last      (0 .. t-1 at tau = 1)
theta(tau) = exp z(tau), z from the ODE            (d/2,), see :mod:`longreach.methods.positions.clex`
angles = p * theta(tau) / s                        a row spans tau native windows, read with tau's frequencies
```
The released code samples from [0, t tau) and divides by s; for t >= L that spans tau windows too, for t < L (a
short training length on a long-window model) it would span only t tau, while inference picks tau = l / L, so
positions are drawn from [0, L tau) there.
``prepare`` adds the ODE to the model as ``clex_ode`` (W_up (d/2, h), W_down (h, d/2), float32 whatever the model
dtype; W_down = 0, so training starts from NTK scaling with alpha = 2 tau - 1); the loop trains it with LoRA
(``trainable``), gradients flowing through the RK4 solve; ``save_pretrained`` leaves it out of the weights.
At tau = 1 the frequencies are the model's own and the positions plain. ``finish`` writes
``clex.safetensors`` into the model folder, where the ``clex`` position method finds it:
``longreach eval --model DIR --method clex`` (tau = l / L for the length l read).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from longreach.errors import LongreachError
from longreach.methods.positions.base import rotary_dim
from longreach.methods.positions.clex import FILE_NAME, ClexOde
from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import Document, Recipe, TrainBatch, causal_lm, causal_lm_loss, pack, register_recipe

SCALE = "clex_scale"  # extras key: the batch's sampled scale tau, a () float tensor
ATTRIBUTE = "clex_ode"  # the ODE's name on the causal LM


def ode_of(model: Any) -> ClexOde:
    """The ODE ``prepare`` added to ``model`` (a peft wrapper or the causal LM)."""
    ode = getattr(causal_lm(model), ATTRIBUTE, None)
    if ode is None:
        raise LongreachError("clex: the ODE is added by prepare(model, length); call it first")
    return ode


def clex_positions(length: int, scale: int, rng: np.random.Generator, window: int = 0) -> np.ndarray:
    """``length`` sorted distinct positions of [0, max(length, window) * scale), the first 0 and the last the span's
    end (CLEX's position sampling), so a row spans ``scale`` native windows; plain 0 .. length-1 at scale 1."""
    span = max(length, window) * scale
    if scale == 1 or length < 3 or span <= length:
        return np.arange(length)
    inner = np.sort(rng.choice(span - 2, size=length - 2, replace=False)) + 1
    return np.concatenate([[0], inner, [span - 1]])


def new_ode(model: Any, *, param_factor: int, act: str, max_factor: float, step: float) -> ClexOde:
    """A CLEX ODE at initialisation for ``model``'s rotary basis (float32, on the model's device)."""
    lm = causal_lm(model)
    config = adapter.text_config(lm.config)
    layer_type = adapter.long_range_layer_types(lm.config)[0]
    params = adapter.rope_parameters(config, layer_type)
    if params.get("rope_type", "default") != "default":
        raise LongreachError(
            f"clex: the model already rescales RoPE (rope_type {params['rope_type']!r}); CLEX learns from plain RoPE"
        )
    ode = ClexOde(
        rotary_dim(config, params),
        params["rope_theta"],
        adapter.native_context_length(config),
        param_factor=param_factor,
        act=act,
        max_factor=max_factor,
        step=step,
    )
    return ode.to(next(lm.parameters()).device)


@register_recipe
@dataclass(frozen=True)
class Clex(Recipe):
    """Fine-tune with a neural-ODE RoPE scaling at sampled scales; the ODE is saved with the model."""

    max_factor: int = field(default=16, metadata={"help": "largest scale tau sampled (and used at inference)"})
    param_factor: int = field(default=1, metadata={"help": "ODE hidden width h = param_factor x d"})
    act: Literal["tanh", "silu"] = field(default="tanh", metadata={"help": "ODE activation"})
    step: float = field(default=0.01, metadata={"help": "RK4 step in tau"})
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    name: ClassVar[str] = "clex"
    summary: ClassVar[str] = "CLEX: per-frequency RoPE scaling learned as a neural ODE; eval with --method clex"
    paper: ClassVar[str] = "Chen et al. 2024, CLEX (ICLR)"
    example: ClassVar[str] = "clex:max_factor=2"

    def __post_init__(self) -> None:
        require(self.max_factor >= 1, f"clex: max_factor must be >= 1; got {self.max_factor}")
        require(self.param_factor >= 1, f"clex: param_factor must be >= 1; got {self.param_factor}")
        require(0 < self.step <= 1, f"clex: step must be in (0, 1]; got {self.step:g}")

    def prepare(self, model: Any, length: int) -> None:
        lm = causal_lm(model)
        lm.clex_ode = new_ode(
            model, param_factor=self.param_factor, act=self.act, max_factor=self.max_factor, step=self.step
        )  # a submodule, so the loop optimises and checkpoints it; save_pretrained leaves it out (finish writes it)
        lm._keys_to_ignore_on_save = set(lm._keys_to_ignore_on_save or ()) | {f"{ATTRIBUTE}.up", f"{ATTRIBUTE}.down"}
        self._state["window"] = lm.clex_ode.native

    def trainable(self, model: Any) -> list[torch.nn.Parameter]:
        return list(ode_of(model).parameters())

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        if "window" not in self._state:
            raise LongreachError("clex: the native window is read by prepare(model, length); call it first")
        window = self._state["window"]
        for row in pack(documents, length, rng, masked=False):
            scale = int(rng.integers(1, self.max_factor + 1))
            positions = [clex_positions(length, scale, rng, window) for _ in range(row.input_ids.shape[0])]
            row.position_ids = torch.from_numpy(np.stack(positions))
            row.extras[SCALE] = torch.tensor(float(scale))
            yield row

    def loss(self, model: Any, batch: TrainBatch) -> torch.Tensor:
        ode, lm = ode_of(model), causal_lm(model)
        windows = max(1, batch.input_ids.shape[1] // ode.native)
        inv_freq = ode.inv_freq(float(batch.extras[SCALE])) / windows  # (d/2,), differentiable in the ODE

        def provider(seq_len: int, layer_type: str | None) -> tuple[torch.Tensor, float]:
            return inv_freq, 1.0

        with adapter.patched_rope(lm, provider, adapter.long_range_layer_types(lm.config)):
            return causal_lm_loss(model, batch)

    def finish(self, model: Any, out: Path) -> None:
        ode_of(model).save(out / FILE_NAME)
