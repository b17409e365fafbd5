"""``hf``: transformers' own RoPE scaling, applied through the model config (the peer baseline row).

The rotary module is rebuilt from a config whose ``rope_parameters`` carry the rope_type and factor, so
transformers' code computes the frequencies, including its ``dynamic`` type, which recomputes the base
as the cache grows (keys already cached keep their old rotation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from longreach.methods.base import Kind, Method
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel


@register
@dataclass(frozen=True)
class HfRope(Method):
    """A transformers rope_type with a factor (``original_max=0``: the model's native window)."""

    rope_type: Literal["", "linear", "dynamic", "yarn", "llama3"] = field(
        default="", metadata={"help": "linear | dynamic | yarn | llama3 (required)"}
    )
    factor: float = field(default=2.0, metadata={"help": "scale s"})
    original_max: int = field(default=0, metadata={"help": "pre-extension window (0: the model's)"})

    name: ClassVar[str] = "hf"
    reads_length: ClassVar[bool] = True
    kind: ClassVar[Kind] = "position"
    summary: ClassVar[str] = "transformers' own rope_type via the config (peer baseline)"
    paper: ClassVar[str] = "transformers modeling_rope_utils"
    example: ClassVar[str] = "hf:rope_type=dynamic"

    def __post_init__(self) -> None:
        require(bool(self.rope_type), "hf: give rope_type (linear, dynamic, yarn or llama3), e.g. hf:rope_type=yarn")
        require(self.factor >= 1.0, f"hf: factor must be >= 1; got {self.factor:g}")

    def conflict_with(self, other: Method) -> str | None:
        return "a model reads with one RoPE rescaling at a time" if other.kind == "position" else None

    def rope_updates(self, native: int) -> dict[str, Any]:
        updates: dict[str, Any] = {"rope_type": self.rope_type, "factor": self.factor}
        if self.rope_type in ("yarn", "llama3"):
            updates["original_max_position_embeddings"] = self.original_max or native
        if self.rope_type == "llama3":
            updates.update(low_freq_factor=1.0, high_freq_factor=4.0)
        return updates

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        with adapter.rebuilt_rotary(loaded.model, self.rope_updates(loaded.native_context_length)):
            yield
