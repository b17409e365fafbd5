"""Rotary position embeddings (RoPE): the model-level rotary module, its parameters, and the two ways position
methods change it (a provider of inverse frequencies, or transformers' own module rebuilt from a new config).

transformers 5.x computes cos/sin once per forward in a model-level module (``model.model.rotary_emb``):
``forward(x, position_ids)`` for Llama-family models, ``forward(x, position_ids, layer_type)`` for models
with per-layer-type RoPE (Gemma 3: "sliding_attention" and "full_attention"). Angles are
``position_ids.float() * inv_freq`` in float32, whatever the model dtype; cos and sin are multiplied by the
attention scaling (YaRN's mscale) and then cast to the model dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from longreach.errors import LongreachError
from longreach.models.adapter.config import text_config

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


def _rotary_owner(model: Any, module: torch.nn.Module) -> Any:
    base = getattr(model, "model", model)
    return base if getattr(base, "rotary_emb", None) is module else base.language_model


@contextmanager
def rebuilt_rotary(model: Any, updates: dict[str, Any]) -> Iterator[None]:
    """Rebuild the rotary module from a config whose rope_parameters include ``updates``, so transformers'
    own RoPE code (its rope init functions and dynamic update) runs: the peer baseline. Restored on exit."""
    module = rotary_module(model)
    layer_types = long_range_layer_types(model.config)
    config = with_rope_parameters(model.config, updates, layer_types)
    replacement = type(module)(config).to(next(model.parameters()).device)
    owner = _rotary_owner(model, module)
    owner.rotary_emb = replacement
    try:
        yield
    finally:
        owner.rotary_emb = module


def set_rope_parameters(model: Any, updates: dict[str, Any], max_position_embeddings: int | None = None) -> None:
    """Change the model's RoPE for good (training recipes): ``updates`` merged into the (long-range) rope_parameters
    of its config, ``max_position_embeddings`` set when given, and the rotary module rebuilt from that config, so
    transformers' own rope init function computes inv_freq and ``save_pretrained`` writes the change."""
    module = rotary_module(model)
    cfg = text_config(model.config)
    cfg.rope_parameters = with_rope_parameters(
        model.config, updates, long_range_layer_types(model.config)
    ).rope_parameters
    if max_position_embeddings is not None:
        cfg.max_position_embeddings = max_position_embeddings
    _rotary_owner(model, module).rotary_emb = type(module)(cfg).to(next(model.parameters()).device)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (b, heads, t, d) rotated by cos/sin (b, t, d): the same expression as transformers' Llama."""
    return (x * cos.unsqueeze(1)) + (rotate_half(x) * sin.unsqueeze(1))
