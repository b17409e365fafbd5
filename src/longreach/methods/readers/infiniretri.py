"""``infiniretri``: read chunk by chunk, keep the sentences the question attends to (Ye, Wang, Wang 2025,
"Infinite Retrieval", arXiv 2502.12962; reference code: PyPI ``infini-retri`` 0.0.3).

Ein legend: h query heads, m question tokens, c context tokens of one step, s sentences.
The prompt is tokenized once and its context cut at sentence and line ends by token offsets (a unit holds at most
``unit`` tokens, so one long line cannot make a step or the retained set unbounded; the reference tokenizes each
sentence on its own, which gives token sequences no tokenization of the text produces and more tokens), and the
units are grouped into chunks of about ``chunk`` tokens. Step i reads
  [special tokens] + sink sentences + retained sentences + chunk i + question
and, at layer ``layer``, takes the attention of the question rows over the context columns, summed over
heads (m, c); a 1-D convolution with ``phrase`` ones smooths it into phrase scores; question tokens are
weighted by the attention they give the question itself (use_question_weight, applied once; the reference
code applies it twice); the ``topk``
best-scoring tokens select whole sentences, which become the retained set (token ids only, no KV).
After the last chunk the model answers from sink + retained sentences + question. Layers after ``layer``
are skipped during the scoring passes, so a middle layer makes each step cheaper.

When sink + context + question fit in one chunk, the reader hands the prompt to the plain model: the answer
equals the unmodified model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch

from longreach.generation import Generation, Request
from longreach.methods.readers.base import ReaderMethod, ReadingEngine
from longreach.methods.readers.units import (
    group_units,
    leading,
    phrase_scores,
    question_attention,
    sentence_units,
    split_sentences,
    time_now,
    with_reading_cost,
)
from longreach.methods.spec import register
from longreach.params import require

__all__ = ["InfiniRetri", "sentence_units", "split_sentences"]

if TYPE_CHECKING:
    from longreach.methods.spec import MethodStack


@register
@dataclass(frozen=True)
class InfiniRetri(ReaderMethod):
    """Attention-guided sentence retrieval over chunks; memory stays flat, cost grows linearly."""

    chunk: int = field(default=1024, metadata={"help": "new context tokens read per step"})
    topk: int = field(default=300, metadata={"help": "tokens whose sentences are retained each step"})
    phrase: int = field(default=8, metadata={"help": "smoothing window in tokens (phrase_token_num)"})
    layer: int = field(default=-1, metadata={"help": "selection layer (negative: from the last)"})
    sink: int = field(default=64, metadata={"help": "leading context tokens always kept (instructions)"})
    unit: int = field(default=128, metadata={"help": "longest selectable unit in tokens (longer sentences split)"})

    name: ClassVar[str] = "infiniretri"
    example: ClassVar[str] = "infiniretri:chunk=256:topk=40:unit=32:sink=16"
    summary: ClassVar[str] = "InfiniRetri: read in chunks, keep the sentences the question attends to"
    paper: ClassVar[str] = "Ye et al. 2025, Infinite Retrieval"
    bounded_memory: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("chunk", "topk", "phrase", "unit"):
            require(getattr(self, name) >= 1, f"infiniretri: {name} must be >= 1; got {getattr(self, name)}")
        require(self.sink >= 0, f"infiniretri: sink must be >= 0; got {self.sink}")

    def read(self, engine: ReadingEngine, request: Request, inner: MethodStack) -> Generation:
        special = engine.encode("")
        ids, question = sentence_units(engine.tokenizer, request.prompt, len(request.context), self.unit)
        sink = leading(ids, self.sink)
        if sum(map(len, ids)) <= self.chunk + self.topk:  # fits: the plain model reads it
            return engine.complete(engine.encode(request.prompt), request, inner)[0]
        retained: list[int] = []
        steps, start = 0, time_now()
        for chunk in group_units(ids, list(range(len(sink), len(ids))), self.chunk):
            retained = self._select(engine, inner, special, ids, sink, retained + chunk, question)
            steps += 1
        prompt_ids = special + [t for i in sink + retained for t in ids[i]] + question
        generation, _ = engine.complete(prompt_ids, request, inner)
        seconds = time_now() - start
        return with_reading_cost(generation, seconds, sum(map(len, ids)) + len(question) + len(special))

    def _select(
        self,
        engine: ReadingEngine,
        inner: MethodStack,
        special: list[int],
        ids: list[list[int]],
        sink: list[int],
        candidates: list[int],
        question: list[int],
    ) -> list[int]:
        """Indices (sorted) of the candidate sentences holding the ``topk`` best-scoring tokens."""
        owners = [i for i in candidates for _ in ids[i]]
        context = [t for i in candidates for t in ids[i]]
        prefix = special + [t for i in sink for t in ids[i]]
        step_ids = torch.tensor([prefix + context + question])
        scores = self._question_attention(engine, inner, step_ids, len(prefix), len(context), len(question))
        top = torch.topk(scores, min(self.topk, scores.shape[0])).indices
        return sorted({owners[int(i)] for i in top})

    def _question_attention(
        self, engine: ReadingEngine, inner: MethodStack, step_ids: torch.Tensor, offset: int, width: int, m: int
    ) -> torch.Tensor:
        """Per context token (c,): phrase-smoothed, question-weighted attention from the question rows."""
        probs = question_attention(engine, inner, step_ids, m, self.layer)  # (m, n)
        return phrase_scores(probs, offset, width, self.phrase)
