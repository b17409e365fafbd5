"""``selfextend``: grouped attention, no training (Jin et al. 2024, "LLM Maybe LongLM", arXiv 2401.01325).

Ein legend: b batch, h query heads, k kv heads, t new tokens, n all tokens (cache + new), d head dim.
With group size G and neighbour window W, a query at position i attends to key j (j <= i) with
  - normal RoPE positions (i, j) when i - j < W (neighbour attention), and
  - grouped positions (i // G + W - W // G, j // G) otherwise (grouped attention),
so no relative distance exceeds W + (n - W) / G. Keys are cached before rotation and rotated per call.
For n <= W every pair is a neighbour and the layer runs the model's own attention function: the output is
exactly the unmodified model's.

Per block of queries, neighbour and grouped attention run as two flash-attention passes over disjoint key
ranges, merged exactly through their log-sum-exps (as LongLM's flash variant does).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from longreach.errors import LongreachError
from longreach.methods.attention.kernels import attention_with_lse, merge_attention
from longreach.methods.base import Kind, Method
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel

# Position methods whose frequencies depend on the sequence length: SelfExtend's grouped positions stay
# inside the window, so a length-driven rescaling would change positions that need no change.
_LENGTH_DRIVEN = {"dynamic", "longrope"}
QUERY_BLOCK = 1024


def choose_group(target: int, window: int, native: int, usable: float = 2 / 3) -> int:
    """G for reading ``target`` tokens: 1 (plain attention) inside the native window, else the smallest G
    with W + (target - W) / G <= usable * native (LongLM README: keep positions well trained)."""
    if target <= native:
        return 1
    room = usable * native - window
    if room <= 0:
        raise LongreachError(f"selfextend: window {window} leaves no room below {usable:.2f} x {native} positions")
    return max(1, math.ceil((target - window) / room))


def grouped_attention(
    call: adapter.AttentionCall, key: torch.Tensor, value: torch.Tensor, window: int, group: int
) -> torch.Tensor:
    """SelfExtend attention of the new queries over all keys. key/value (b, k, n, d) pre-RoPE;
    returns (b, t, h, d). Per block of queries, grouped attention over far keys and neighbour attention
    over near keys are computed separately and merged exactly through their log-sum-exps."""
    n = key.shape[2]
    key_positions = torch.arange(n, device=key.device)
    query_positions = call.positions
    shift = window - window // group
    q_near = call.rotate(call.query, query_positions)
    q_far = call.rotate(call.query, query_positions // group + shift)
    k_near = call.rotate(key, key_positions).repeat_interleave(call.groups, dim=1)
    k_far = call.rotate(key, key_positions // group).repeat_interleave(call.groups, dim=1)
    values = value.repeat_interleave(call.groups, dim=1)
    outputs = []
    for start in range(0, query_positions.shape[0], QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, query_positions.shape[0])
        positions = query_positions[start:stop]
        first_near = max(0, int(positions[0]) - window + 1)
        last = int(positions[-1]) + 1
        far_end = max(0, last - window)
        distance_near = positions[:, None] - key_positions[None, first_near:last]
        parts = [
            attention_with_lse(
                q_near[:, :, start:stop],
                k_near[:, :, first_near:last],
                values[:, :, first_near:last],
                (distance_near >= 0) & (distance_near < window),
                call.scaling,
            )
        ]
        if far_end > 0:
            distance_far = positions[:, None] - key_positions[None, :far_end]
            parts.append(
                attention_with_lse(
                    q_far[:, :, start:stop],
                    k_far[:, :, :far_end],
                    values[:, :, :far_end],
                    distance_far >= window,
                    call.scaling,
                )
            )
        outputs.append(merge_attention(parts))
    return torch.cat(outputs, dim=2).transpose(1, 2)


@register
@dataclass(frozen=True)
class SelfExtend(Method):
    """Grouped attention with group size ``group`` and neighbour window ``window`` (0: chosen by rule)."""

    group: int = field(default=0, metadata={"help": "G; 0: 1 inside L, else the smallest keeping positions < 2L/3"})
    window: int = field(default=0, metadata={"help": "W neighbour tokens; 0: L/4"})
    target: int = field(default=0, metadata={"help": "length the rule plans for (0: the length read)"})

    name: ClassVar[str] = "selfextend"
    example: ClassVar[str] = "selfextend:window=128:group=4"
    reads_length: ClassVar[bool] = True
    kind: ClassVar[Kind] = "attention"
    summary: ClassVar[str] = "SelfExtend: neighbour attention within W, grouped positions (//G) beyond"
    paper: ClassVar[str] = "Jin et al. 2024, LLM Maybe LongLM"

    def __post_init__(self) -> None:
        for name in ("group", "window", "target"):
            require(getattr(self, name) >= 0, f"selfextend: {name} must be >= 0; got {getattr(self, name)}")

    def conflict_with(self, other: Method) -> str | None:
        rope_type = getattr(other, "rope_type", None)
        if other.name in _LENGTH_DRIVEN or (other.name == "hf" and rope_type in ("dynamic", "longrope")):
            return (
                "its grouped positions stay inside the native window, so a length-driven rescaling would "
                "rescale positions that need none; use a static one (linear, ntk, yarn, abf) or none"
            )
        return None

    def plan(self, native: int, length: int) -> tuple[int, int]:
        """(window W, group G) for reading ``length`` tokens with a native window ``native``."""
        window = self.window or max(64, native // 4)
        group = self.group or choose_group(self.target or length, window, native)
        return window, group

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        native = loaded.native_context_length
        plans: dict[int, tuple[int, int]] = {}

        def kernel(call: adapter.AttentionCall, inner: object) -> torch.Tensor:
            key, value = call.key, call.value
            if call.cache is not None:  # cached keys stay unrotated: they are rotated per call
                key, value = call.cache.update(key, value, call.layer)
            n = key.shape[2]
            if call.positions[0] == 0 or call.layer not in plans:  # a new sequence: plan from its length
                plans[call.layer] = self.plan(native, n)
            window, group = plans[call.layer]
            if n <= window or group == 1:
                positions = torch.arange(n, device=key.device)
                return call.standard(call.rotate(call.query, call.positions), call.rotate(key, positions), value)
            return grouped_attention(call, key, value, window, group)

        with adapter.attention_kernel(loaded.model, kernel):
            yield
