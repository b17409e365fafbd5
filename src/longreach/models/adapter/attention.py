"""The one hook layer through which every change to attention goes.

Ein legend: b batch, h query heads, k KV heads, t new tokens, n tokens in the cache, d head dim.

While any hook is active on a model, each of its attention modules runs one dispatcher instead of its own
forward: it is installed when the first hook arrives and removed when the last one leaves, however many hooks
nest, and methods never touch a module themselves. Two kinds of hooks compose in it:

- **kernels** replace the attention computation. They form a chain, the newest outermost:
  ``kernel(call, inner)`` gets the layer's :class:`AttentionCall` (pre-RoPE queries and keys, absolute
  positions, the cache) and either computes the output itself or hands the call on with ``inner(call)``; the
  chain ends in :func:`model_attention`, the model's own attention. A reader's scoring pass can thus observe one
  layer and hand every other layer to an attention method underneath (InfiniRetri over SelfExtend).
- **observers** run after a layer's attention, with what it read (:class:`LayerInput`) and the cache that now
  holds the new keys: cache methods compress each layer there.

Supported: Llama-family attention modules (q/k/v/o projections, optional q_norm/k_norm applied per head before
RoPE, no sliding window): Llama, Mistral without sliding window, Qwen2, Qwen3, SmolLM. transformers 5.24 names
the cache argument ``cache``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from longreach.errors import LongreachError
from longreach.models.adapter.config import text_config
from longreach.models.adapter.rope import apply_rope, rotary_module

_LLAMA_FAMILY_ATTENTION = {"LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3Attention"}
_HOOKS = "_longreach_hooks"


@dataclass
class AttentionCall:
    """One layer's attention inputs. Shapes: query (b, h, t, d), key/value (b, k, t, d) for the t new tokens,
    pre-RoPE; positions (t,) absolute; cos/sin (b, t, d) for those positions under the model's current RoPE."""

    module: torch.nn.Module
    layer: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    cache: Any
    attention_mask: Any
    kwargs: dict[str, Any]
    rotary: torch.nn.Module
    rotated: torch.Tensor | None = None  # the rotated query (b, h, t, d), once the model's attention computed it
    output_needed: bool = True  # False: only the cache update matters (a kernel may return zeros, see fill_cache)

    @property
    def scaling(self) -> float:
        return self.module.scaling

    @property
    def groups(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.module.num_key_value_groups

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (b, h, n, d) rotated to ``positions`` (n,) with the model's current RoPE (angles in float32)."""
        cos, sin = self.rotary(x, positions.unsqueeze(0))
        return apply_rope(x, cos, sin)

    def standard(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The model's own attention function over rotated query (b,h,t,d) and all keys/values (b,k,n,d), with
        the forward's causal mask; returns (b, t, h, d)."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.module.config._attn_implementation, None)
        output, _ = interface(
            self.module, query, key, value, self.attention_mask, dropout=0.0, scaling=self.scaling, **self.kwargs
        )
        return output


Kernel = Callable[[AttentionCall, Callable[[AttentionCall], torch.Tensor]], torch.Tensor]


@dataclass
class LayerInput:
    """What one attention layer read during a forward: its module, the hidden states entering attention
    (b, t, hidden) and the RoPE cos/sin (b, t, d) of those t tokens. ``question``: the index, among those t
    tokens, where the question begins when the read holds one (a question-aware compressed read; set by the
    engine), else None."""

    module: torch.nn.Module
    layer: int
    hidden: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    memo: dict[str, Any] = field(default_factory=dict)  # scores derived from this read, shared by methods
    question: int | None = None
    rotary: torch.nn.Module | None = None  # the model's rotary embedding (cos/sin of positions not read yet)
    query: torch.Tensor | None = None  # the rotated queries (b, h, t, d) of the attention call, when kept
    prerope_query: torch.Tensor | None = None  # the same queries before RoPE (after q_norm), when kept

    def queries(self, last: int | None = None) -> torch.Tensor:
        """Rotated queries (b, h, t', d) of the last ``last`` tokens (all when None), as attention saw them: those
        of the attention call when it kept them (:func:`after_attention` ``with_queries``), else recomputed from
        the hidden states (the same projection and rotation)."""
        if self.query is not None:
            return self.query if last is None else self.query[:, :, -last:]
        hidden, cos, sin = self.hidden, self.cos, self.sin
        if last is not None:
            hidden, cos, sin = hidden[:, -last:], cos[:, -last:], sin[:, -last:]
        shape = (*hidden.shape[:2], -1, self.module.head_dim)
        query = self.module.q_proj(hidden).view(shape).transpose(1, 2)
        if hasattr(self.module, "q_norm"):
            query = self.module.q_norm(query)
        return apply_rope(query, cos, sin)


Observer = Callable[[LayerInput, Any], None]


def attention_modules(model: Any) -> list[torch.nn.Module]:
    """Every decoder layer's self-attention module; raises for architectures the hooks do not support."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise LongreachError(f"{type(model).__name__}: no decoder layers found for an attention method")
    modules = [layer.self_attn for layer in layers]
    kind = type(modules[0]).__name__
    if kind not in _LLAMA_FAMILY_ATTENTION or getattr(text_config(model.config), "sliding_window", None):
        raise LongreachError(
            f"attention and cache methods support Llama-family attention "
            f"({', '.join(sorted(_LLAMA_FAMILY_ATTENTION))}) without sliding windows; this model uses {kind}"
        )
    return modules


def model_attention(call: AttentionCall) -> torch.Tensor:
    """The end of every kernel chain: the model's own attention (RoPE, cache update, attention function), the same
    operations in the same order as a Llama-family module's forward. Keeps the rotated query on ``call.rotated``."""
    query = call.rotated = apply_rope(call.query, call.cos, call.sin)
    key, value = apply_rope(call.key, call.cos, call.sin), call.value
    if call.cache is not None:
        key, value = call.cache.update(key, value, call.layer)
    if not call.output_needed:
        return query.new_zeros(query.shape).transpose(1, 2)  # (b, t, h, d), never read
    return call.standard(query, key, value)


@dataclass
class _Hooks:
    """The hooks active on one attention module (kernels: innermost first)."""

    rotary: torch.nn.Module
    kernels: list[Kernel] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    query_observers: int = 0  # observers that read the attention call's rotated queries

    def run(self, call: AttentionCall, depth: int) -> torch.Tensor:
        """Kernel ``depth`` of the chain (counting from the innermost), handing on to the one below it."""
        if depth < 0:
            return model_attention(call)
        return self.kernels[depth](call, lambda inner_call: self.run(inner_call, depth - 1))


def _dispatcher(module: torch.nn.Module, hooks: _Hooks) -> Callable[..., Any]:
    def forward(
        hidden_states: torch.Tensor,
        position_embeddings: Any = None,
        attention_mask: Any = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        cos, sin = position_embeddings
        rotated = prerope = None
        if hooks.kernels or hooks.query_observers:  # the module's own steps, with the call's tensors at hand
            batch, length = hidden_states.shape[:2]
            shape = (batch, length, -1, module.head_dim)
            query = module.q_proj(hidden_states).view(shape).transpose(1, 2)
            key = module.k_proj(hidden_states).view(shape).transpose(1, 2)
            value = module.v_proj(hidden_states).view(shape).transpose(1, 2)
            if hasattr(module, "q_norm"):
                query, key = module.q_norm(query), module.k_norm(key)
            positions = kwargs.get("position_ids")
            positions = positions[0] if positions is not None else torch.arange(length)
            call = AttentionCall(
                module, module.layer_idx, query, key, value, positions, cos, sin, cache, attention_mask, kwargs,
                hooks.rotary,
            )  # fmt: skip
            output = hooks.run(call, len(hooks.kernels) - 1)
            if call.output_needed:
                result = (module.o_proj(output.reshape(batch, length, -1).contiguous()), None)
            else:  # only the cache mattered (adapter.fill_cache): the forward stops here, nothing reads this
                result = (hidden_states.new_zeros(hidden_states.shape), None)
            if hooks.query_observers and call.rotated is not None:
                rotated, prerope = call.rotated, call.query
        else:
            result = type(module).forward(
                module, hidden_states, position_embeddings=position_embeddings, attention_mask=attention_mask,
                cache=cache, **kwargs,
            )  # fmt: skip
        for observer in list(hooks.observers):
            observed = LayerInput(
                module, module.layer_idx, hidden_states, cos, sin, rotary=hooks.rotary, query=rotated,
                prerope_query=prerope,
            )  # fmt: skip
            observer(observed, cache)
        return result

    return forward


@contextmanager
def _hooked(model: Any, add: Callable[[_Hooks], None], remove: Callable[[_Hooks], None]) -> Iterator[None]:
    """Add a hook to every attention module for the block (installing the dispatcher where none runs yet)."""
    modules = attention_modules(model)
    rotary = rotary_module(model)
    for module in modules:
        if _HOOKS not in vars(module):
            hooks = _Hooks(rotary)
            setattr(module, _HOOKS, hooks)
            module.forward = _dispatcher(module, hooks)
        add(vars(module)[_HOOKS])
    try:
        yield
    finally:
        for module in modules:
            hooks = vars(module)[_HOOKS]
            remove(hooks)
            if not hooks.kernels and not hooks.observers:
                del module.forward  # the class's forward is visible again
                delattr(module, _HOOKS)


@contextmanager
def attention_kernel(model: Any, kernel: Kernel) -> Iterator[None]:
    """Route every layer's attention through ``kernel`` (outermost of the chain) for the block."""
    with _hooked(model, lambda hooks: hooks.kernels.append(kernel), lambda hooks: hooks.kernels.remove(kernel)):
        yield


@contextmanager
def after_attention(model: Any, observer: Observer, with_queries: bool = False) -> Iterator[None]:
    """Call ``observer(layer_input, cache)`` after every layer's attention (its cache already holds the new keys).
    ``with_queries``: the layer's attention runs as :func:`model_attention` (the module's own operations, so the
    same output) and ``layer_input.query`` holds the rotated queries it read (``prerope_query`` the same before
    RoPE), so an observer that scores with queries does not project them again (None when a kernel in the chain
    computed attention without the model's own rotation)."""
    count = 1 if with_queries else 0

    def add(hooks: _Hooks) -> None:
        hooks.observers.append(observer)
        hooks.query_observers += count

    def remove(hooks: _Hooks) -> None:
        hooks.observers.remove(observer)
        hooks.query_observers -= count

    with _hooked(model, add, remove):
        yield
