"""The only module that reads transformers internals (config fields, rotary modules, attention, caches).

Every method and backend goes through these functions, so an API change in transformers is fixed here
once. Tested against transformers 5.24 (RoPE settings in ``config.rope_parameters``; caches made of
``cache.layers`` whose tensors live in layer attributes).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from longreach.errors import LongreachError


def text_config(config: Any) -> Any:
    """The decoder config (multimodal configs nest it under ``text_config``)."""
    return getattr(config, "text_config", None) or config


def uses_rope(config: Any) -> bool:
    """True when positions enter through rotary embeddings (then no hard length limit exists)."""
    cfg = text_config(config)
    return bool(getattr(cfg, "rope_parameters", None)) or hasattr(cfg, "rope_theta")


def native_context_length(config: Any) -> int:
    """The window the model was trained for (``max_position_embeddings`` or its older aliases)."""
    cfg = text_config(config)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"config of model_type {getattr(cfg, 'model_type', '?')!r} names no context length")


def hard_max_length(config: Any) -> int | None:
    """Longest input the model can run at all: None for RoPE models, the position table size otherwise."""
    return None if uses_rope(config) else native_context_length(config)


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes one token adds to a full (uncompressed) KV cache: 2 x layers x kv_heads x head_dim x itemsize."""
    cfg = text_config(config)
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * itemsize


def _tensors_in(obj: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    for value in vars(obj).values():
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, torch.Tensor))
    return found


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """Every tensor a transformers cache holds (keys, values, quantized payloads, scales...)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"unsupported cache type {type(cache).__name__}: expected a transformers Cache")
    return [t for layer in layers for t in _tensors_in(layer)]


def physical_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the storages behind ``tensors``, each storage counted once (views share storage)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def cache_bytes(cache: Any) -> int:
    """Physical bytes of a KV cache: what the tensors occupy, not a count of logical tokens."""
    return physical_bytes(cache_tensors(cache))


def forward(
    model: Any, input_ids: torch.Tensor, cache: Any = None, start: int = 0, logits_to_keep: int = 1
) -> tuple[torch.Tensor, Any]:
    """One forward pass with a KV cache: returns (logits of the last ``logits_to_keep`` positions, cache).

    ``start`` is the absolute position of ``input_ids[:, 0]``; passing it explicitly keeps positions right
    when a cache method has evicted tokens (the cache length is then shorter than the sequence).
    transformers 5.24 names the cache argument and output ``cache`` (``past_key_values`` before).

    When the layers of ``cache`` hold different numbers of tokens (layer-varying compression), a multi-token
    input is read one token at a time: transformers builds one causal mask from layer 0's length, which would
    be wrong for the other layers, while single-token steps need no mask.
    """
    if cache is not None and input_ids.shape[1] > 1 and len(set(layer_lengths(cache))) > 1:
        logits = []
        for offset in range(input_ids.shape[1]):
            step, cache = forward(model, input_ids[:, offset : offset + 1], cache, start + offset, 1)
            logits.append(step)
        return torch.cat(logits, dim=1)[:, -logits_to_keep:], cache
    positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    out = model(input_ids=input_ids, position_ids=positions, cache=cache, use_cache=True, logits_to_keep=logits_to_keep)
    return out.logits, out.cache


# ---------------------------------------------------------------------------------------------------------------
# Rotary position embeddings
#
# transformers 5.x computes cos/sin once per forward in a model-level module (``model.model.rotary_emb``):
# ``forward(x, position_ids)`` for Llama-family models, ``forward(x, position_ids, layer_type)`` for models
# with per-layer-type RoPE (Gemma 3: "sliding_attention" and "full_attention"). Angles are
# ``position_ids.float() * inv_freq`` in float32, whatever the model dtype; cos and sin are multiplied by the
# attention scaling (YaRN's mscale) and then cast to the model dtype.
# ---------------------------------------------------------------------------------------------------------------

RopeProvider = Callable[[int, "str | None"], tuple[torch.Tensor, float]]


def rotary_module(model: Any) -> torch.nn.Module:
    """The model-level rotary embedding module (raises for models without one)."""
    base = getattr(model, "model", model)
    module = getattr(base, "rotary_emb", None) or getattr(getattr(base, "language_model", None), "rotary_emb", None)
    if module is None:
        kind = getattr(text_config(model.config), "model_type", type(model).__name__)
        raise LongreachError(f"model type {kind!r} has no rotary embedding module that position methods can patch")
    return module


def long_range_layer_types(config: Any) -> list[str | None]:
    """The RoPE layer types a position method rescales: [None] for one shared RoPE; for per-layer-type RoPE
    (Gemma 3) only the full-attention layers, since sliding-window layers never see far positions."""
    cfg = text_config(config)
    layer_types = getattr(cfg, "layer_types", None)
    params = getattr(cfg, "rope_parameters", None) or {}
    if layer_types and all(t in params for t in set(layer_types)):
        return [t for t in sorted(set(layer_types)) if "sliding" not in t]
    return [None]


def rope_parameters(config: Any, layer_type: str | None) -> dict[str, Any]:
    """The rope_parameters dict (rope_theta, rope_type, ...) of ``layer_type`` (None: the shared one)."""
    params = text_config(config).rope_parameters
    return dict(params[layer_type] if layer_type is not None else params)


def with_rope_parameters(config: Any, updates: dict[str, Any], layer_types: list[str | None]) -> Any:
    """A copy of the (text) config whose rope_parameters for ``layer_types`` are updated with ``updates``."""
    cfg = copy.deepcopy(text_config(config))
    params = copy.deepcopy(cfg.rope_parameters)
    for layer_type in layer_types:
        if layer_type is None:
            params.update(updates)
        else:
            params[layer_type] = {**params[layer_type], **updates}
    cfg.rope_parameters = params
    return cfg


@contextmanager
def patched_rope(model: Any, provider: RopeProvider, layer_types: list[str | None]) -> Iterator[None]:
    """Compute cos/sin from ``provider(seq_len, layer_type) -> (inv_freq, attention_scaling)`` for
    ``layer_types``; other layer types keep the model's own RoPE. Restored on exit.

    ``seq_len`` is the length of the sequence being read: the largest position of a multi-token forward
    (prefill) since positions last restarted at 0. Single-token decode steps reuse it, so a length-dependent
    rule (dynamic NTK) rotates every token of one sequence with the same frequencies, unlike transformers'
    ``dynamic`` type, which changes the base under keys already in the cache.
    """
    module = rotary_module(model)
    original = module.forward
    state = {"seq_len": 0}

    def forward(x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None) -> Any:
        if layer_type not in layer_types:
            return original(x, position_ids, layer_type) if layer_type is not None else original(x, position_ids)
        first, last = int(position_ids[..., 0].min()), int(position_ids.max())
        if first == 0 and layer_type == layer_types[0]:
            state["seq_len"] = 0
        if position_ids.shape[-1] > 1 or state["seq_len"] == 0:
            state["seq_len"] = max(state["seq_len"], last + 1)
        inv_freq, scaling = provider(state["seq_len"], layer_type)
        angles = position_ids[..., None].float() * inv_freq.to(device=x.device, dtype=torch.float32)
        emb = torch.cat((angles, angles), dim=-1)
        return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)

    module.forward = forward
    try:
        yield
    finally:
        del module.forward  # the instance attribute goes; the class's forward is visible again


@contextmanager
def rebuilt_rotary(model: Any, updates: dict[str, Any]) -> Iterator[None]:
    """Rebuild the rotary module from a config whose rope_parameters include ``updates``, so transformers'
    own RoPE code (its rope init functions and dynamic update) runs: the peer baseline. Restored on exit."""
    base = getattr(model, "model", model)
    module = rotary_module(model)
    layer_types = long_range_layer_types(model.config)
    config = with_rope_parameters(model.config, updates, layer_types)
    replacement = type(module)(config).to(next(model.parameters()).device)
    owner = base if getattr(base, "rotary_emb", None) is module else base.language_model
    owner.rotary_emb = replacement
    try:
        yield
    finally:
        owner.rotary_emb = module


# ---------------------------------------------------------------------------------------------------------------
# Attention
#
# Attention methods replace each decoder layer's attention forward with one that hands an ``AttentionCall``
# (pre-RoPE queries and keys, absolute positions, the cache) to a kernel. Supported: the Llama-family
# attention modules (q/k/v/o projections, optional q_norm/k_norm applied per head before RoPE, no sliding
# window): Llama, Mistral without sliding window, Qwen2, Qwen3, SmolLM.
# ---------------------------------------------------------------------------------------------------------------

_LLAMA_FAMILY_ATTENTION = {"LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3Attention"}


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (b, heads, t, d) rotated by cos/sin (b, t, d): the same expression as transformers' Llama."""
    return (x * cos.unsqueeze(1)) + (rotate_half(x) * sin.unsqueeze(1))


@dataclass
class AttentionCall:
    """One layer's attention inputs. Shapes: query (b, heads, t, d), key/value (b, kv_heads, t, d) for the t
    new tokens, pre-RoPE; positions (t,) absolute; cos/sin (b, t, d) for those positions."""

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
        """The model's own attention function over rotated query (b,h,t,d) and all keys/values (b,kv,n,d);
        returns (b, t, h, d)."""
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.module.config._attn_implementation, None)
        output, _ = interface(
            self.module, query, key, value, self.attention_mask, dropout=0.0, scaling=self.scaling, **self.kwargs
        )
        return output


AttentionKernel = Callable[[AttentionCall], torch.Tensor]


def attention_modules(model: Any) -> list[torch.nn.Module]:
    """Every decoder layer's self-attention module; raises for architectures the kernels do not support."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise LongreachError(f"{type(model).__name__}: no decoder layers found for an attention method")
    modules = [layer.self_attn for layer in layers]
    kind = type(modules[0]).__name__
    if kind not in _LLAMA_FAMILY_ATTENTION or getattr(text_config(model.config), "sliding_window", None):
        raise LongreachError(
            f"attention methods support Llama-family attention ({', '.join(sorted(_LLAMA_FAMILY_ATTENTION))}) "
            f"without sliding windows; this model uses {kind}"
        )
    return modules


@contextmanager
def patched_attention(model: Any, kernel: AttentionKernel) -> Iterator[None]:
    """Route every layer's attention through ``kernel``; restored on exit. The kernel updates the cache."""
    modules = attention_modules(model)
    rotary = rotary_module(model)

    def make_forward(module: torch.nn.Module) -> Callable[..., Any]:
        def forward(
            hidden_states: torch.Tensor,
            position_embeddings: Any = None,
            attention_mask: Any = None,
            cache: Any = None,
            **kwargs: Any,
        ) -> tuple[torch.Tensor, None]:
            batch, length = hidden_states.shape[:2]
            shape = (batch, length, -1, module.head_dim)
            query = module.q_proj(hidden_states).view(shape).transpose(1, 2)
            key = module.k_proj(hidden_states).view(shape).transpose(1, 2)
            value = module.v_proj(hidden_states).view(shape).transpose(1, 2)
            if hasattr(module, "q_norm"):
                query, key = module.q_norm(query), module.k_norm(key)
            cos, sin = position_embeddings
            positions = kwargs.get("position_ids")
            positions = positions[0] if positions is not None else torch.arange(length)
            call = AttentionCall(
                module, module.layer_idx, query, key, value, positions, cos, sin, cache, attention_mask, kwargs, rotary
            )
            output = kernel(call)
            return module.o_proj(output.reshape(batch, length, -1).contiguous()), None

        return forward

    for module in modules:
        module.forward = make_forward(module)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def crop_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` tokens of every layer of a transformers cache (in place).
    transformers 5.24's ``crop`` takes the negative number of tokens to remove."""
    remove = cache.get_seq_length() - length
    if remove > 0:
        cache.crop(-remove)


def attention_with_lse(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention that also returns each row's log-sum-exp, so partial attentions over disjoint key
    sets can be merged exactly. query (b, h, t, d), key/value (b, h, n, d), mask (t, n) bool (True = attend).
    Returns output (b, h, t, d) and lse (b, h, t) in float32; rows with no allowed key get lse = -inf.

    On CPU this is torch's flash kernel (``_scaled_dot_product_flash_attention_for_cpu``, an aten op that
    returns the log-sum-exp); elsewhere a plain float32 computation.
    """
    additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(~mask, float("-inf"))
    if query.device.type == "cpu" and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, attn_mask=additive, scale=scale
        )
    else:
        scores = (query.float() @ key.float().transpose(-1, -2)) * scale + additive.float()
        lse = torch.logsumexp(scores, dim=-1)
        output = (torch.softmax(scores, dim=-1) @ value.float()).to(query.dtype)
    empty = ~mask.any(dim=-1)
    lse = lse.float().masked_fill(empty, float("-inf"))
    return torch.nan_to_num(output.masked_fill(empty[:, None], 0.0)), lse


def merge_attention(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Combine partial attentions (output (b,h,t,d), lse (b,h,t)) over disjoint key sets into one."""
    lses = torch.stack([lse for _, lse in parts])
    top = lses.max(dim=0).values.masked_fill(torch.isinf(lses.max(dim=0).values), 0.0)
    weights = torch.exp(lses - top)
    total = weights.sum(dim=0)
    merged = sum(w[..., None] * out.float() for (out, _), w in zip(parts, weights, strict=True))
    return (merged / total[..., None]).to(parts[0][0].dtype)


def empty_cache(model: Any) -> Any:
    """An empty transformers KV cache for ``model`` (DynamicCache)."""
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def causal_lm_from_state_dict(config: Any, state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> Any:
    """Build the causal-LM class registered for ``config`` and load ``state_dict`` into it (no weight files).

    Raises KeyError when transformers has no causal-LM class for this config type.
    """
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return model_class.from_pretrained(None, config=config, state_dict=state_dict, dtype=dtype).eval()


# ---------------------------------------------------------------------------------------------------------------
# Cache methods
#
# Cache methods observe each layer's attention input during a prefill (a forward hook, so they compose with
# attention methods that replace the forward) and then rewrite that layer's cache tensors in place. Shapes:
# hidden (b, t, hidden), queries (b, heads, t, d) after RoPE, cached keys/values (b, kv_heads, n, d) after RoPE.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class LayerInput:
    """What one attention layer read during a forward: its module, the hidden states entering attention
    (b, t, hidden) and the RoPE cos/sin (b, t, d) of those t tokens."""

    module: torch.nn.Module
    layer: int
    hidden: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    memo: dict[str, Any] = field(default_factory=dict)  # scores derived from this read, shared by methods

    def queries(self, last: int | None = None) -> torch.Tensor:
        """Rotated queries (b, heads, t', d) of the last ``last`` tokens (all when None), as attention saw them."""
        hidden, cos, sin = self.hidden, self.cos, self.sin
        if last is not None:
            hidden, cos, sin = hidden[:, -last:], cos[:, -last:], sin[:, -last:]
        shape = (*hidden.shape[:2], -1, self.module.head_dim)
        query = self.module.q_proj(hidden).view(shape).transpose(1, 2)
        if hasattr(self.module, "q_norm"):
            query = self.module.q_norm(query)
        return apply_rope(query, cos, sin)


LayerHook = Callable[[LayerInput, Any], None]


@contextmanager
def after_attention(model: Any, hook: LayerHook) -> Iterator[None]:
    """Call ``hook(layer_input, cache)`` after every layer's attention (its cache already holds the new keys).
    Uses forward hooks, so it composes with :func:`patched_attention`. Removed on exit."""
    modules = attention_modules(model)

    def make_hook(module: torch.nn.Module) -> Callable[..., None]:
        def run(mod: torch.nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            cos, sin = kwargs["position_embeddings"]
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            hook(LayerInput(module, module.layer_idx, hidden, cos, sin), cache)

        return run

    handles = [module.register_forward_hook(make_hook(module), with_kwargs=True) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def layer_kv(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached keys and values (b, kv_heads, n, d) of one layer of a DynamicCache."""
    entry = cache.layers[layer]
    return entry.keys, entry.values


def set_layer_kv(cache: Any, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Replace one layer's cached keys and values (the old storages are freed when nothing else holds them)."""
    entry = cache.layers[layer]
    entry.keys, entry.values = keys, values


def set_layer(cache: Any, layer: int, replacement: Any) -> None:
    """Replace a cache's layer object (a cache method's own layer class) in place."""
    cache.layers[layer] = replacement


def new_cache(layers: list[Any]) -> Any:
    """A transformers cache made of the given layer objects (subclasses of transformers' ``DynamicLayer``)."""
    from transformers.cache_utils import Cache

    return Cache(layers=layers)


def dynamic_layer_class() -> type:
    """transformers' ``DynamicLayer``: the base of the cache layers that cache methods define."""
    from transformers.cache_utils import DynamicLayer

    return DynamicLayer


def clone_cache(cache: Any) -> Any:
    """An independent copy of a plain DynamicCache (every tensor copied)."""
    return copy.deepcopy(cache)


def is_plain_cache(cache: Any) -> bool:
    """True for a DynamicCache of DynamicLayers with one length in every layer: the cache of a prefix,
    which a longer prompt can continue (prefix reuse)."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    if type(cache) is not DynamicCache or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return False
    return len({layer.get_seq_length() for layer in cache.layers}) <= 1


def layer_lengths(cache: Any) -> list[int]:
    """Tokens held by each layer (they differ after layer-varying compression)."""
    return [layer.get_seq_length() for layer in cache.layers]


# ---------------------------------------------------------------------------------------------------------------
# Profiling (MoA): explicit attention probabilities with gradients
# ---------------------------------------------------------------------------------------------------------------

ProbabilityHook = Callable[[int, torch.Tensor, torch.Tensor], None]


class _ObservedAttention(torch.autograd.Function):
    """Causal softmax attention whose backward recomputes the probabilities P (as flash attention does, so no
    (n, n) tensor is kept between the passes), hands (P, dL/dP) to a hook, then returns the input gradients:
    dS = P * (dP - rowsum(dP * P)), dq = s dS k, dk = s dS^T q, dv = P^T dO. Shapes (b, h, n, d), float32."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, hook: Any) -> Any:
        ctx.save_for_backward(query, key, value)
        ctx.scale, ctx.hook = scale, hook
        return _causal_probabilities(query, key, scale) @ value

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Any:
        query, key, value = ctx.saved_tensors
        probabilities = _causal_probabilities(query, key, ctx.scale)
        grad_probabilities = grad_output @ value.transpose(-1, -2)
        ctx.hook(probabilities, grad_probabilities)
        grad_value = probabilities.transpose(-1, -2) @ grad_output
        grad_scores = probabilities * (grad_probabilities - (grad_probabilities * probabilities).sum(-1, keepdim=True))
        del probabilities, grad_probabilities
        grad_query = (grad_scores @ key) * ctx.scale
        grad_key = (grad_scores.transpose(-1, -2) @ query) * ctx.scale
        return grad_query, grad_key, grad_value, None, None


def _causal_probabilities(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    n = key.shape[2]
    logits = (query @ key.transpose(-1, -2)) * scale
    future = torch.ones(query.shape[2], n, dtype=torch.bool, device=query.device).triu(n - query.shape[2] + 1)
    return logits.masked_fill(future, float("-inf")).softmax(dim=-1)


@contextmanager
def attention_probabilities(model: Any, on_gradient: ProbabilityHook) -> Iterator[None]:
    """Compute every layer's attention explicitly (float32, causal) and, during the backward pass, call
    ``on_gradient(layer, probabilities (b, h, n, n), d loss / d probabilities)``. For forwards without a cache
    (:func:`forward_with_grad`). The probabilities are recomputed in the backward pass, one layer at a time."""

    def kernel(call: AttentionCall) -> torch.Tensor:
        positions = call.positions
        query = call.rotate(call.query, positions).float()
        key = call.rotate(call.key, positions).float().repeat_interleave(call.groups, dim=1)
        value = call.value.float().repeat_interleave(call.groups, dim=1)
        layer = call.layer
        output = _ObservedAttention.apply(query, key, value, call.scaling, lambda p, g: on_gradient(layer, p, g))
        return output.to(call.value.dtype).transpose(1, 2)

    with patched_attention(model, kernel):
        yield


def forward_with_grad(model: Any, input_ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
    """Logits of the last ``logits_to_keep`` positions with autograd recording from the input embeddings on
    (the weights' own gradients are not computed): for gradient profiling. No cache."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            embeds = model.get_input_embeddings()(input_ids).detach().requires_grad_(True)
            positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
            out = model(inputs_embeds=embeds, position_ids=positions, use_cache=False, logits_to_keep=logits_to_keep)
            return out.logits
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
