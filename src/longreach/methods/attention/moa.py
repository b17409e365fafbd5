"""``moa``: heterogeneous elastic sliding windows per KV head (Fu et al. 2024, "MoA: Mixture of Sparse
Attention for Automatic Large Language Model Compression", arXiv 2406.14909).

Ein legend: b batch, h query heads, k KV heads, g = h / k, t new tokens, n keys, d head dim.

A plan (a JSON file from :func:`longreach.methods.attention.moa_profile.make_plan`, see ``longreach moa-plan``)
gives each (layer, KV head) an elastic rule ``W(N) = alpha + beta * N`` for an input of N tokens. A query at
position i then attends to key j when ``i - j < W`` (its band) or ``j < sink`` (the global sink tokens), in the
prefill and while decoding, and the cache of that head holds only those keys: the ``sink`` first tokens and the
``W - 1`` most recent ones. N is the length of the first read of a sequence (the prompt, or the context in
question-agnostic evaluation); the windows stay fixed afterwards, as MoA's static circular cache.

Keys are stored after RoPE, each head in its own tensor (b, 1, n_head, d), so the physical bytes are
``sum over heads of (sink + W - 1)`` tokens. Attention runs per KV head in query blocks over the keys its band
can reach (sdpa with a small mask), so the prefill costs about N x W per head instead of N^2 / 2.
Deviation: MoA searches with Gurobi on MHA-converted models; our plans come from a Lagrangian greedy search per
KV head (GQA kept) and budget the cache size at target lengths rather than the attention density.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from longreach.errors import LongreachError
from longreach.methods.base import Kind, Method
from longreach.methods.spec import register
from longreach.models import adapter

if TYPE_CHECKING:
    from longreach.models import LoadedModel

QUERY_BLOCK = 512
PLANS = Path(__file__).resolve().parent / "plans"


def shipped_plans() -> list[str]:
    """Names of the plans in the package (``moa:plan=NAME``): made by ``longreach moa-plan`` for zoo models."""
    return sorted(p.stem for p in PLANS.glob("*.json"))


@dataclass(frozen=True)
class MoAPlan:
    """Per (layer, KV head) elastic window rules; ``alphas[layer][head] + betas[layer][head] * N`` tokens."""

    alphas: list[list[float]]
    betas: list[list[float]]
    sink: int = 64
    meta: dict[str, Any] = field(default_factory=dict)

    def windows(self, length: int) -> list[list[int]]:
        """Window (tokens a query sees, itself included, sinks apart) per layer and KV head for N = length."""
        return [
            [max(1, min(length, round(a + b * length))) for a, b in zip(alphas, betas, strict=True)]
            for alphas, betas in zip(self.alphas, self.betas, strict=True)
        ]

    def kept_fraction(self, length: int) -> float:
        """Fraction of a length-N cache the plan keeps (sinks plus W - 1 recent tokens per head)."""
        heads = [min(length, self.sink + w - 1) for row in self.windows(length) for w in row]
        return sum(heads) / (len(heads) * length)

    def save(self, path: Path) -> None:
        document = {"alphas": self.alphas, "betas": self.betas, "sink": self.sink, "meta": self.meta}
        Path(path).write_text(json.dumps(document, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> MoAPlan:
        """A plan from a JSON file, or a plan shipped with longreach by name (see :func:`shipped_plans`)."""
        file = Path(path)
        if not file.is_file() and str(path) in shipped_plans():
            file = PLANS / f"{path}.json"
        if not file.is_file():
            raise LongreachError(
                f"moa: no plan file {str(path)!r} (shipped plans: {', '.join(shipped_plans())}); "
                "make one with `longreach moa-plan`"
            )
        try:
            data = json.loads(file.read_text())
            plan = cls(data["alphas"], data["betas"], int(data.get("sink", 64)), data.get("meta", {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise LongreachError(f"moa: {path} is not a MoA plan ({type(exc).__name__}: {exc})") from None
        if len(plan.alphas) != len(plan.betas) or any(
            len(a) != len(b) for a, b in zip(plan.alphas, plan.betas, strict=True)
        ):
            raise LongreachError(f"moa: {path}: alphas and betas must have the same (layers, kv heads) shape")
        return plan


class MoAStorage:
    """One layer's cache: per KV head, the sink tokens then a contiguous run of the most recent tokens.
    ``seen`` counts every token the layer has read; head h's recent keys sit at positions seen - r_h .. seen - 1."""

    is_croppable = False

    def __init__(self, windows: list[int], sink: int) -> None:
        super().__init__()
        self.windows, self.sink, self.seen = windows, sink, 0
        self.head_keys: list[torch.Tensor] = []
        self.head_values: list[torch.Tensor] = []

    def get_seq_length(self) -> int:
        return self.seen

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device, self.dtype, self.is_initialized = key_states.device, key_states.dtype, True

    def update(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the moa kernel reads and writes this layer itself")

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a moa cache cannot be cropped")


def band_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    window: int,
    sink: int,
    scale: float,
) -> torch.Tensor:
    """query (b, g, t, d) over one KV head's keys/values (b, 1, n, d) at ascending ``key_positions`` (n,):
    key j is visible to query i when kp_j <= qp_i and (qp_i - kp_j < window or kp_j < sink). Returns (b, g, t, d)."""
    sinks = int((key_positions < sink).sum())
    outputs = []
    for start in range(0, query.shape[2], QUERY_BLOCK):
        stop = min(start + QUERY_BLOCK, query.shape[2])
        first, last = int(query_positions[start]), int(query_positions[stop - 1])
        lo = max(sinks, int(torch.searchsorted(key_positions, first - window + 1)))
        hi = int(torch.searchsorted(key_positions, last, right=True))
        index = torch.cat((torch.arange(sinks), torch.arange(lo, max(lo, hi))))
        kp = key_positions[index]
        qp = query_positions[start:stop, None]
        mask = (kp[None, :] <= qp) & ((qp - kp[None, :] < window) | (kp[None, :] < sink))
        k = keys[:, :, index].expand(-1, query.shape[1], -1, -1)
        v = values[:, :, index].expand(-1, query.shape[1], -1, -1)
        outputs.append(
            torch.nn.functional.scaled_dot_product_attention(query[:, :, start:stop], k, v, attn_mask=mask, scale=scale)
        )
    return torch.cat(outputs, dim=2)


@register
@dataclass(frozen=True)
class MoA(Method):
    """Per-head elastic sliding windows plus sinks, from a plan file made by profiling the model."""

    plan: str = field(default="", metadata={"help": "a plan JSON file or a shipped plan's name (`longreach moa-plan`)"})

    name: ClassVar[str] = "moa"
    reads_length: ClassVar[bool] = True
    kind: ClassVar[Kind] = "attention"
    example: ClassVar[str] = "moa:plan=tiny-llama-half"
    summary: ClassVar[str] = "MoA: per-head elastic sliding windows + sinks from a profiled plan (cache shrinks)"
    paper: ClassVar[str] = "Fu et al. 2024, MoA: Mixture of Sparse Attention for Automatic LLM Compression"

    def __post_init__(self) -> None:
        if not self.plan:
            raise LongreachError("moa: give a plan file, e.g. moa:plan=moa.json (make one with `longreach moa-plan`)")
        MoAPlan.load(self.plan)

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        plan = MoAPlan.load(self.plan)
        modules = adapter.attention_modules(loaded.model)
        kv_heads = modules[0].config.num_key_value_heads
        if len(plan.alphas) != len(modules) or any(len(row) != kv_heads for row in plan.alphas):
            raise LongreachError(
                f"moa: {self.plan} plans {len(plan.alphas)} layers x {len(plan.alphas[0])} KV heads; "
                f"{loaded.name} has {len(modules)} x {kv_heads}"
            )

        def kernel(call: adapter.AttentionCall, inner: object) -> torch.Tensor:
            start = int(call.positions[0])
            if call.cache is None:  # one read without a cache (a reader's scoring pass): bands, nothing stored
                layer = MoAStorage(plan.windows(call.key.shape[2])[call.layer], plan.sink)
            else:
                layer = call.cache.layers[call.layer]
                if start == 0 or not isinstance(layer, MoAStorage):  # a new sequence: windows for its length
                    layer = adapter.layer_type(MoAStorage)(plan.windows(call.key.shape[2])[call.layer], plan.sink)
                    layer.lazy_initialization(call.key, call.value)
                    adapter.set_layer(call.cache, call.layer, layer)
            query = call.rotate(call.query, call.positions)
            key = call.rotate(call.key, call.positions)
            g = call.groups
            outputs, stored_keys, stored_values = [], [], []
            for head, window in enumerate(layer.windows):
                keys, values = key[:, head : head + 1], call.value[:, head : head + 1]
                positions = call.positions
                if layer.head_keys:  # earlier tokens of this sequence: the sinks, then a contiguous recent run
                    old_k, old_v = layer.head_keys[head], layer.head_values[head]
                    sinks = min(plan.sink, old_k.shape[2])
                    recent = old_k.shape[2] - sinks
                    old_positions = torch.cat((torch.arange(sinks), torch.arange(start - recent, start)))
                    keys, values = torch.cat((old_k, keys), 2), torch.cat((old_v, values), 2)
                    positions = torch.cat((old_positions, positions))
                q = query[:, head * g : (head + 1) * g]
                attended = band_attention(q, keys, values, call.positions, positions, window, plan.sink, call.scaling)
                outputs.append(attended)
                keep = (positions < plan.sink) | (positions > int(call.positions[-1]) - window + 1)
                index = keep.nonzero().squeeze(-1)
                stored_keys.append(keys[:, :, index].contiguous())
                stored_values.append(values[:, :, index].contiguous())
            if call.cache is not None:
                layer.head_keys, layer.head_values = stored_keys, stored_values
                layer.seen = int(call.positions[-1]) + 1
            return torch.cat(outputs, dim=1).transpose(1, 2)

        with adapter.attention_kernel(loaded.model, kernel):
            yield
