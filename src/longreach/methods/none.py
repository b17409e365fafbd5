"""``none``: the unmodified model, the baseline every other method is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from longreach.methods.base import Kind, Method
from longreach.methods.spec import register


@register
@dataclass(frozen=True)
class NoMethod(Method):
    """The model as loaded: no position rescaling, full attention, full KV cache."""

    name: ClassVar[str] = "none"
    kind: ClassVar[Kind] = "none"
    summary: ClassVar[str] = "the unmodified model (baseline); stands alone in a stack"
