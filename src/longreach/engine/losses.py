"""Next-token losses over a long text (perplexity), full-context or sliding-window.

Full context reads the whole text in one pass (positions 0..n-1, no cache) and scores every token after the first
from its complete prefix. Sliding window (the fixed-length-model recipe of Press et al. 2021 and transformers'
perplexity guide) reads windows of ``window`` tokens moving by ``stride``; each window starts its positions at 0
and scores only the tokens no earlier window scored, so a token far into the text is scored from at most
``window`` tokens of context. Shapes: ids (n,) -> nll (n-1,) in float32, nll[j-1] = -log p(ids[j] | context).
"""

from __future__ import annotations

import torch

from longreach.errors import LongreachError
from longreach.methods import MethodStack
from longreach.models import adapter

REFUSED_KINDS = {  # method kind -> why a stack holding one gives no per-token losses
    "cache": "it compresses one read of a prompt for answering; a loss over every token reads it whole",
    "reader": "it chooses what the model reads; a loss needs every token read in order",
}


def check_stack(stack: MethodStack) -> None:
    """Refuse (one line, the reason) a stack that cannot give token losses: position and attention methods can."""
    for kind, reason in REFUSED_KINDS.items():
        method = stack.of_kind(kind)
        if method is not None:
            raise LongreachError(f"perplexity cannot run {stack.repr} ({method.name}): {reason}")


def token_nll(
    model: torch.nn.Module, ids: list[int], window: int | None = None, stride: int | None = None
) -> torch.Tensor:
    """Per-token NLL (n-1,) of ``ids`` under ``model`` (whatever method stack is applied around the call)."""
    n = len(ids)
    window = n if window is None else min(window, n)
    stride = window if stride is None else stride
    scored, first_unscored = [], 1
    for begin in range(0, n - 1, stride):
        end = min(begin + window, n)
        chunk = torch.tensor([ids[begin:end]])
        hidden = adapter.last_hidden_states(model, chunk)
        fresh = end - max(first_unscored, begin + 1)  # targets begin+1..end-1 not scored before
        nll = adapter.next_token_nll(model, hidden[:, -fresh - 1 : -1], chunk[0, -fresh:])
        scored.append(nll)
        first_unscored = end
        if end == n:
            break
    return torch.cat(scored)
