"""Forward passes: a cached forward at explicit positions (inference), a forward that only fills the cache (a
compressed read, whose logits nobody reads), the final hidden states of a whole text and the next-token losses
they give (perplexity), and a forward with gradients from the input embeddings (profiling)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from longreach.models.adapter.attention import AttentionCall, attention_kernel, attention_modules
from longreach.models.adapter.cache import layer_lengths
from longreach.models.adapter.config import text_config


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


class _Filled(Exception):
    """Raised after the last layer's attention of a :func:`fill_cache` forward: nothing after it is needed."""


@contextmanager
def _stop_after_last_attention(model: Any) -> Iterator[int]:
    """For the block, forwards stop right after the last layer's attention module (its hooks and observers included),
    raising an exception that :func:`fill_cache` catches: the last layer's MLP, the final norm and the head are never
    computed. Yields the last layer's index."""
    modules = attention_modules(model)

    def stop(_module: torch.nn.Module, _args: Any, _output: Any) -> None:
        raise _Filled

    handle = modules[-1].register_forward_hook(stop)
    try:
        yield len(modules) - 1
    finally:
        handle.remove()


def fill_cache(model: Any, input_ids: torch.Tensor, cache: Any = None, start: int = 0) -> Any:
    """Read ``input_ids`` (1, t) into ``cache`` (a new one when None) at positions ``start``..: a forward that only
    fills the cache, for reads whose logits nobody uses (a cache method's compressed read, followed by a forward of
    the rest of the prompt). The last layer's keys and values need only its input, so its attention output
    (``AttentionCall.output_needed`` is False there: kernels write the cache and skip the attention), its MLP, the
    final norm and the head are skipped: 1 / layers of the forward, and the cache is bitwise the one :func:`forward`
    leaves. Returns the cache."""
    if cache is None:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    with _stop_after_last_attention(model) as last:

        def keys_only(call: AttentionCall, inner: Any) -> torch.Tensor:
            call.output_needed = call.layer != last
            return inner(call)

        try:
            with attention_kernel(model, keys_only):
                forward(model, input_ids, cache, start)
        except _Filled:
            pass
    return cache


def forward_rows(
    model: Any, input_ids: torch.Tensor, cache: Any, positions: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, Any]:
    """One decode step for a batch of rows of a left-padded plain cache: ``input_ids`` and ``positions`` (b, 1),
    ``attention_mask`` (b, slots + 1) with 0 on padding slots. Returns (logits (b, 1, vocab), cache)."""
    out = model(
        input_ids=input_ids,
        position_ids=positions,
        attention_mask=attention_mask,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits, out.cache


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


def last_hidden_states(model: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The decoder's final hidden states (b, t, hidden) for every position of ``input_ids`` (1, t), read in one pass
    at positions 0..t-1 without a cache: the language-model head is left to :func:`next_token_nll`, so a long text's
    logits never exist at once."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    return model.model(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state


def next_token_nll(model: Any, hidden: torch.Tensor, targets: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Negative log-likelihood (t,) in float32 of ``targets`` (t,) given ``hidden`` (1, t, hidden): position i's
    hidden state predicts ``targets[i]``. The head (with the model's final logit soft-capping, Gemma) runs ``chunk``
    positions at a time."""
    head = model.get_output_embeddings()
    cap = getattr(text_config(model.config), "final_logit_softcapping", None)
    losses = []
    for start in range(0, hidden.shape[1], chunk):
        logits = head(hidden[0, start : start + chunk]).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        losses.append(torch.nn.functional.cross_entropy(logits, targets[start : start + chunk], reduction="none"))
    return torch.cat(losses)
