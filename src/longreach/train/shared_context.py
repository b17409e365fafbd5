"""Several short answers scored after one long context, the context run once (LongPO's chosen/rejected pair).

Ein legend: ``c`` context tokens, ``b`` answers of ``a`` tokens each, ``n = c + b a``, ``v`` vocabulary;
attention tensors: query (1, h, n, d), key/value (1, k, n, d) (k KV heads).

One row ``[context; answer_1; ..; answer_b]`` in which every answer reads the whole context and its own earlier
tokens, at positions ``c .. c + a - 1``, and never another answer: the row scores each answer exactly as its own
row ``[context; answer_i]`` would, with the context's activations computed (and held for backward) once instead of
b times. On ``sdpa`` the row runs as b + 1 attention calls and no (n, n) mask: ``[context; answer_1]`` causal (the
fast kernel that skips the masked half), then each further answer's a queries over the context's keys and its own
(an (a, c + a) mask). The single-mask form, kept for other attention implementations, makes the CPU kernel visit
every block of the (n, n) square: on SmolLM2 at 4K in fp32 with LoRA, its forward and backward took 1.47x [1.38,
1.76] the split form's, which took about what one answer's causal row takes (``benchmarks/results/longpo_pair.md``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from longreach.models.adapter.sdpa import sdpa_variant
from longreach.train.recipe import attention_input, causal_lm

NAME = "longreach_shared_context"
LAYOUT = "shared_context_layout"  # attention kwarg: (c, b, a)


def shared_context_row(c: int, b: int, a: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (1, n) and bool mask (1, 1, n, n) of the row (see the module docstring)."""
    n = c + b * a
    run = torch.cat([torch.zeros(c, dtype=torch.long), torch.arange(1, b + 1).repeat_interleave(a)])  # (n,) 0: context
    positions = torch.cat([torch.arange(c), torch.arange(c, c + a).repeat(b)])
    keys = torch.arange(n)
    mask = (keys[None, :] <= keys[:, None]) & ((run[None, :] == 0) | (run[None, :] == run[:, None]))  # (q, k)
    return positions[None], mask[None, None]


def shared_context_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; ``kwargs[LAYOUT]`` = (c, b, a). Returns (1, n, h, d): the
    row's attention with ``attention_mask`` ignored (the layout defines it)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    c, b, a = kwargs.pop(LAYOUT)
    head = c + a

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return sdpa_attention_forward(module, q, k, v, mask, dropout=dropout, scaling=scaling, **kwargs)[0]

    parts = [attend(query[:, :, :head], key[:, :, :head], value[:, :, :head], None)]  # causal: the fast kernel
    sees = torch.ones(a, head, dtype=torch.bool, device=query.device)
    sees[:, c:] = torch.ones(a, a, dtype=torch.bool, device=query.device).tril()  # (a, c + a): context, own past
    for start in range(head, c + b * a, a):
        keys = torch.cat([key[:, :, :c], key[:, :, start : start + a]], dim=2)  # (1, k, c + a, d)
        values = torch.cat([value[:, :, :c], value[:, :, start : start + a]], dim=2)
        parts.append(attend(query[:, :, start : start + a], keys, values, sees[None, None]))
    return torch.cat(parts, dim=1), None


def split_attention(lm: Any) -> AbstractContextManager[bool]:
    """Run ``lm``'s ``sdpa`` attention as :func:`shared_context_sdpa` for the block (restored after); yields
    whether it applied (other implementations keep theirs and take the row's mask)."""
    return sdpa_variant(lm, NAME, shared_context_sdpa)


def answer_logps(model: Any, context: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
    """Summed log-probs (b,) of ``answers`` (b, a) after ``context`` (1, c), in one row of n = c + b a tokens.

    Two (1, c + a) rows, LongPO's earlier form here, held a 4K context's activations twice and were killed for
    memory at 23.3 GiB RSS on a machine of 23.5 GiB (SmolLM2 in fp32, LoRA, no activation checkpointing)."""
    from trl.trainer.utils import selective_log_softmax

    b, a, c = answers.shape[0], answers.shape[1], context.shape[1]
    positions, mask = shared_context_row(c, b, a)
    lm = causal_lm(model)
    ids = torch.cat([context, answers.reshape(1, b * a)], dim=1)  # (1, n)
    with split_attention(lm) as split:
        # split: an all-ones padding mask (so the restart of positions is not read as packed sequences) and the
        # layout; else the row's own mask
        extra = {LAYOUT: (c, b, a)} if split else {}
        logits = lm(
            input_ids=ids,
            position_ids=positions.to(ids.device),
            attention_mask=torch.ones_like(ids) if split else attention_input(lm, mask.to(ids.device)),
            use_cache=False,
            logits_to_keep=b * a + 1,
            **extra,
        ).logits[0]  # (b a + 1, v): the context's last position, then every answer token
    logits = logits.float()
    first = logits[:1].expand(b, -1)[:, None]  # (b, 1, v): what the context predicts first, for every answer
    rest = logits[1:].reshape(b, a, -1)[:, :-1]  # (b, a - 1, v): answer token j predicts token j + 1
    return selective_log_softmax(torch.cat([first, rest], dim=1), answers).sum(-1)
