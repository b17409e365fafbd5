"""``longpo``: LongPO, short-to-long preference optimisation (Chen, Li, Shieh, Bing; ICLR 2025, "LongPO: Long Context
Self-Evolution of Large Language Models through Short-to-Long Preference Optimization", arXiv 2502.13922).

Shapes: one pair per long document; ``T`` = |x_L|, ``S`` = |x_S|, ``a`` answer tokens, ``v`` vocabulary.
```
C_L  = the document (cut to the training length),   C_S = a chunk of it (``chunk`` tokens at a random depth)
I    = the instruction about C_S                     x_S = [C_S; I] (1, S)      x_L = [C_L; I] (1, T)
pi_S = the model before training (LoRA disabled, or a copy frozen by prepare), greedy answers of ``a`` tokens:
       y_S = pi_S(. | x_S)  chosen,   y_L = pi_S(. | x_L)  rejected
L    = -log sigmoid( beta [log pi(y_S | x_L) - log pi_S(y_S | x_S)] - beta [log pi(y_L | x_L) - log pi_S(y_L | x_S)] )
       + lambda * NLL(y_S | x_L) / a
```
The reference conditions on the short context x_S while the policy reads x_L: this is LongPO's short-to-long
KL constraint (beta KL[pi(. | x_L) || pi_S(. | x_S)]), which keeps the long-context policy close to what the
model does on short inputs. beta and lambda default to the released settings (0.01 each). Sequence log-probs
sum over the answer tokens (trl's ``selective_log_softmax`` gathers them), both answers of a pair scored in one row
after a single copy of x_L (:mod:`longreach.train.shared_context`); the DPO term is trl's ``sigmoid``
loss with these log-ratios.

Departure from the paper, and why: its instructions are self-generated questions (Self-Instruct) in a chat
template; recipes here see token ids only, so the instruction is a retrieval cue: ``cue`` tokens copied from
C_S, whose continuation the model gives. With the chunk alone the model continues the cue from the text it just
read; with the whole document it must find the chunk first; one instruction per document (no multi-turn).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from longreach.errors import LongreachError
from longreach.models import adapter
from longreach.params import require
from longreach.train.recipe import IGNORE, Document, Recipe, TrainBatch, causal_lm, group_steps, register_recipe
from longreach.train.shared_context import answer_logps

SHORT = "longpo_short"  # extras key: x_S (1, S)


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> torch.Tensor:
    """-log sigmoid(beta ((chosen - ref_chosen) - (rejected - ref_rejected))), averaged over pairs (b,) -> ()."""
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()


def longpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    lam: float,
    answer: int,
) -> torch.Tensor:
    """The DPO term on the short-to-long log-ratios plus lambda times the chosen answer's per-token NLL given x_L;
    policy log-probs are given x_L, reference ones given x_S (b,) -> ()."""
    return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta) + lam * (-chosen / answer).mean()


@torch.no_grad()
def greedy(model: Any, context: torch.Tensor, tokens: int) -> torch.Tensor:
    """The greedy continuation (1, tokens) of ``context`` (1, c), exactly ``tokens`` long (no stop at EOS)."""
    lm = causal_lm(model)
    logits, cache = adapter.forward(lm, context)
    out = [logits[:, -1].argmax(-1, keepdim=True)]
    for step in range(tokens - 1):
        logits, cache = adapter.forward(lm, out[-1], cache, start=context.shape[1] + step)
        out.append(logits[:, -1].argmax(-1, keepdim=True))
    return torch.cat(out, dim=1)


def pair_inputs(document: Document, length: int, chunk: int, cue: int, answer: int, rng: np.random.Generator):
    """(x_L, x_S) token lists for one document, or None when it is too short for a chunk inside a longer context.

    C_L is the document's first ``length - cue - answer`` tokens; C_S is ``chunk`` tokens of it at a random depth;
    the instruction copies ``cue`` tokens of C_S, placed so that their continuation lies inside C_S."""
    context = list(document.tokens[: length - cue - answer])
    if len(context) < 2 * chunk:
        return None
    start = int(rng.integers(0, len(context) - chunk + 1))
    short = context[start : start + chunk]
    at = int(rng.integers(0, chunk - cue - answer + 1))
    instruction = short[at : at + cue]
    return context + instruction, short + instruction


@register_recipe
@dataclass(frozen=True)
class LongPO(Recipe):
    """Preference pairs from the model itself: short-context answers chosen over long-context ones."""

    chunk: int = field(default=512, metadata={"help": "tokens of the short context C_S"})
    cue: int = field(default=16, metadata={"help": "instruction: tokens of C_S to continue"})
    answer: int = field(default=32, metadata={"help": "tokens of each generated answer"})
    beta: float = field(default=0.01, metadata={"help": "DPO temperature beta (LongPO's release: 0.01)"})
    lam: float = field(default=0.01, metadata={"help": "weight of the NLL of the chosen answer (release: 0.01)"})
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    name: ClassVar[str] = "longpo"
    summary: ClassVar[str] = "LongPO: DPO of short-context answers over long-context ones, short-context reference"
    paper: ClassVar[str] = "Chen et al. 2025, LongPO (ICLR)"
    example: ClassVar[str] = "longpo:chunk=64:cue=8:answer=4"

    def __post_init__(self) -> None:
        require(
            self.cue >= 1 and self.answer >= 1, f"longpo: cue and answer must be >= 1; got {self.cue}, {self.answer}"
        )
        require(
            self.chunk >= self.cue + self.answer,
            f"longpo: chunk must hold cue + answer ({self.cue + self.answer} tokens); got {self.chunk}",
        )
        require(self.beta > 0, f"longpo: beta must be > 0; got {self.beta:g}")
        require(self.lam >= 0, f"longpo: lam must be >= 0; got {self.lam:g}")

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        require(
            length >= 2 * self.chunk + self.cue + self.answer,
            f"longpo: training length {length} must hold twice the chunk plus cue and answer "
            f"({2 * self.chunk + self.cue + self.answer} tokens)",
        )
        for document in documents:
            pair = pair_inputs(document, length, self.chunk, self.cue, self.answer, rng)
            if pair is None:
                continue
            long, short = torch.tensor([pair[0]]), torch.tensor([pair[1]])
            t = long.shape[1]
            yield TrainBatch(long, torch.full_like(long, IGNORE), torch.arange(t)[None], extras={SHORT: short})

    def steps(
        self, documents: Iterator[Document], length: int, batch_tokens: int, rng: np.random.Generator
    ) -> Iterator[list[TrainBatch]]:
        """Steps of ``batch_tokens // length`` pairs (at least one): a pair's policy row, x_L and its answers, is
        about one training length, so a step trains as many long rows as another recipe's. (Counting x_L's
        ``length - answer`` tokens instead put three pairs in an 8K step at 4K, 1.5x the other recipes' rows.)"""
        return group_steps(self.batches(documents, length, rng), max(1, batch_tokens // length), size=lambda _: 1)

    def prepare(self, model: Any, length: int) -> None:
        """Keep a frozen copy of the model as pi_S (dropped at the first step when LoRA supplies pi_S instead)."""
        frozen = copy.deepcopy(causal_lm(model)).eval()
        frozen.requires_grad_(False)
        self._state["reference"] = frozen

    @contextlib.contextmanager
    def reference(self, model: Any) -> Iterator[Any]:
        """pi_S: the model with its LoRA adapters disabled, else the frozen copy ``prepare`` took."""
        if hasattr(model, "disable_adapter"):
            self._state.pop("reference", None)
            with model.disable_adapter():
                yield model
            return
        if "reference" not in self._state:
            raise LongreachError("longpo: the reference model is taken by prepare(model, length); call it first")
        yield self._state["reference"]

    def pair(self, model: Any, batch: TrainBatch) -> dict[str, torch.Tensor]:
        """chosen y_S (1, a) from x_S and rejected y_L (1, a) from x_L, by pi_S, with pi_S's log-probs given x_S."""
        long, short = batch.input_ids, batch.extras[SHORT]
        with self.reference(model) as reference, torch.no_grad():
            chosen, rejected = greedy(reference, short, self.answer), greedy(reference, long, self.answer)
            ref = answer_logps(reference, short, torch.cat([chosen, rejected]))
        return {"chosen": chosen, "rejected": rejected, "ref_chosen": ref[:1], "ref_rejected": ref[1:]}

    def loss(self, model: Any, batch: TrainBatch) -> torch.Tensor:
        pair = self.pair(model, batch)
        policy = answer_logps(model, batch.input_ids, torch.cat([pair["chosen"], pair["rejected"]]))
        return longpo_loss(policy[:1], policy[1:], pair["ref_chosen"], pair["ref_rejected"], self.beta, self.lam,
                           self.answer)  # fmt: skip
