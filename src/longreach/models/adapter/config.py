"""Facts read off a transformers config: the decoder config, the native window, KV bytes per token, and the
causal-LM class a config builds."""

from __future__ import annotations

from typing import Any

import torch


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


def causal_lm_from_state_dict(config: Any, state_dict: dict[str, torch.Tensor], dtype: torch.dtype) -> Any:
    """Build the causal-LM class registered for ``config`` and load ``state_dict`` into it (no weight files).

    Raises KeyError when transformers has no causal-LM class for this config type.
    """
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    return model_class.from_pretrained(None, config=config, state_dict=state_dict, dtype=dtype).eval()


def forget_dequantized_quantizer(model: Any) -> None:
    """Detach the quantizer a load left on ``model`` when its weights were dequantized on load (a GGUF file without
    GGUF matmul kernels: transformers' legacy loader, or its ``dequantize`` mode), so ``save_pretrained`` writes the
    plain weights it holds. Raises ValueError when modules still hold packed quantized weights."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if getattr(quantizer, "packed_modules", None) or any(not p.is_floating_point() for p in model.parameters()):
        method = getattr(quantizer.quantization_config, "quant_method", "?")
        raise ValueError(f"its weights are packed {getattr(method, 'value', method)} blocks, not plain tensors")
    model.hf_quantizer = None
    for config in {id(model.config): model.config, id(text_config(model.config)): text_config(model.config)}.values():
        if hasattr(config, "quantization_config"):
            del config.quantization_config
