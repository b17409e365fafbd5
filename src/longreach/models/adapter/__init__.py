"""The only package that reads transformers internals, split by what it adapts: :mod:`.config` (facts read off a
config), :mod:`.rope` (rotary embeddings), :mod:`.attention` (the one hook layer for attention changes),
:mod:`.sdpa` (decode steps of grouped-query attention, packed), :mod:`.linear` (bf16 linear layers on prepacked
oneDNN weights), :mod:`.cache` (KV caches) and :mod:`.forward` (forward passes). An API change in transformers is
fixed here once. Tested against transformers 5.24 (RoPE settings in ``config.rope_parameters``; caches made of
``cache.layers``).
"""

from longreach.models.adapter.attention import (
    AttentionCall,
    Kernel,
    LayerInput,
    Observer,
    after_attention,
    attention_kernel,
    attention_modules,
    model_attention,
)
from longreach.models.adapter.cache import (
    cache_bytes,
    cache_tensors,
    clone_cache,
    crop_cache,
    empty_cache,
    is_plain_cache,
    layer_kv,
    layer_lengths,
    layer_type,
    merge_rows,
    physical_bytes,
    preallocated,
    select_rows,
    set_layer,
    set_layer_kv,
)
from longreach.models.adapter.config import (
    causal_lm_from_state_dict,
    forget_dequantized_quantizer,
    hard_max_length,
    kv_bytes_per_token,
    native_context_length,
    text_config,
    uses_rope,
)
from longreach.models.adapter.forward import (
    forward,
    forward_rows,
    forward_with_grad,
    last_hidden_states,
    next_token_nll,
)
from longreach.models.adapter.linear import drop_packed, packed_linears
from longreach.models.adapter.rope import (
    apply_rope,
    long_range_layer_types,
    patched_rope,
    rebuilt_rotary,
    rope_parameters,
    rotary_module,
    rotate_half,
    set_rope_parameters,
    with_rope_parameters,
)
from longreach.models.adapter.sdpa import packed_decode_attention

__all__ = [
    "AttentionCall",
    "Kernel",
    "LayerInput",
    "Observer",
    "after_attention",
    "apply_rope",
    "attention_kernel",
    "attention_modules",
    "cache_bytes",
    "cache_tensors",
    "causal_lm_from_state_dict",
    "clone_cache",
    "crop_cache",
    "drop_packed",
    "empty_cache",
    "forget_dequantized_quantizer",
    "forward",
    "forward_rows",
    "forward_with_grad",
    "hard_max_length",
    "is_plain_cache",
    "kv_bytes_per_token",
    "last_hidden_states",
    "layer_kv",
    "layer_lengths",
    "layer_type",
    "long_range_layer_types",
    "merge_rows",
    "model_attention",
    "native_context_length",
    "next_token_nll",
    "packed_decode_attention",
    "packed_linears",
    "patched_rope",
    "physical_bytes",
    "preallocated",
    "rebuilt_rotary",
    "rope_parameters",
    "rotary_module",
    "rotate_half",
    "set_rope_parameters",
    "select_rows",
    "set_layer",
    "set_layer_kv",
    "text_config",
    "uses_rope",
    "with_rope_parameters",
]
