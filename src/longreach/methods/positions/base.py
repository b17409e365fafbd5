"""Position methods: rescale rotary position embeddings (RoPE) without retraining.

Notation (methods.md 0.1): head dimension ``d``, pair index ``i = 0 .. d/2-1``, inverse frequency
``theta_i = b^(-2i/d)`` for base ``b`` (``rope_theta``), native window ``L``, scale ``s = L'/L``.

Each method file holds one pure function with the signature of transformers' rope init functions,
``fn(config, device=None, seq_len=None, layer_type=None) -> (inv_freq, attention_factor)``, reading its
parameters from ``config.rope_parameters`` (or ``config.rope_parameters[layer_type]``), and one dataclass
that fills those parameters. Applying a method patches the model's rotary module through the adapter;
angles stay in float32 whatever the model dtype (AnchorAttention, Wang et al. 2024: bf16 positions
break RoPE's relative property at long range).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from longreach.methods.base import Kind, Method
from longreach.models import adapter

if TYPE_CHECKING:
    from longreach.models import LoadedModel

RopeFunction = Callable[..., tuple[torch.Tensor, float]]


def parameters(config: Any, layer_type: str | None) -> dict[str, Any]:
    """``config.rope_parameters`` for ``layer_type`` (the shared dict when None)."""
    params = config.rope_parameters
    return params[layer_type] if layer_type is not None else params


def rotary_dim(config: Any, params: dict[str, Any]) -> int:
    """Rotated dimensions d: head_dim times partial_rotary_factor."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return int(head_dim * params.get("partial_rotary_factor", 1.0))


def base_inv_freq(base: float, dim: int, device: Any = None) -> torch.Tensor:
    """theta_i = base^(-2i/d), i = 0 .. d/2-1, float32 (computed exactly as transformers does). Shape (d/2,)."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
    return 1.0 / (base**exponents)


@dataclass(frozen=True)
class PositionMethod(Method):
    """Base class: ``rope_updates`` says what to put into rope_parameters, ``rope_function`` computes."""

    kind: ClassVar[Kind] = "position"
    rope_function: ClassVar[RopeFunction]

    def rope_updates(self, native: int) -> dict[str, Any]:
        """Entries merged into rope_parameters (``native`` is the model's trained window L)."""
        raise NotImplementedError

    def conflict_with(self, other: Method) -> str | None:
        if other.kind == "position":
            return "a model reads with one RoPE rescaling at a time"
        return None

    def inv_freq(self, loaded: LoadedModel, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        """(inv_freq of shape (d/2,), attention factor) this method gives ``loaded`` at ``seq_len``."""
        layer_types = adapter.long_range_layer_types(loaded.model.config)
        config = adapter.with_rope_parameters(
            loaded.model.config, self.rope_updates(loaded.native_context_length), layer_types
        )
        return type(self).rope_function(config, None, seq_len, layer_types[0])

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        layer_types = adapter.long_range_layer_types(loaded.model.config)
        config = adapter.with_rope_parameters(
            loaded.model.config, self.rope_updates(loaded.native_context_length), layer_types
        )
        function = type(self).rope_function

        def provider(seq_len: int, layer_type: str | None) -> tuple[torch.Tensor, float]:
            return function(config, None, seq_len, layer_type)

        with adapter.patched_rope(loaded.model, provider, layer_types):
            yield
