"""``recycle``: few-shot demonstrations recycled from the context itself (DoubleDipper: Cattan et al. 2024, "Can
Few-shot Work in Long-Context? Recycling the Context to Generate Demonstrations", arXiv 2406.13632).

The prompt is tokenized once and its context cut by token offsets into paragraphs (sentences of a paragraph packed
up to ``unit`` tokens, see :mod:`longreach.methods.readers.units`); after the first ``sink`` context tokens (the
instructions, kept as they are) every paragraph is labelled "\\nParagraph i: " (numbered from 1, stable). Then
``demos`` question-answer pairs about other paragraphs are placed after the context, before the task's question
(which, with its answer prefix, follows unchanged), each answer naming its source paragraph first:

  [special] + sink + "Paragraph 1: " p_1 + ... + "Paragraph n: " p_n
    + "\\n\\nQuestion: q_j\\nAnswer: The relevant paragraph is Paragraph i_j. a_j" (j = 1..demos) + question

The pairs are written by rule (templates), not by the model: the paper prompts the LLM itself for a question and
answer about each sampled paragraph; with a small model those are poor, so (as the method's notes suggest) a
sentence "X is/are/was/were[:] Y." gives "What is x?" / "Y", and any other sentence of five or more words a cloze
question ("Which word ends this sentence: ...?" / its last word). Paragraphs holding a "X is Y" sentence are used
first. The source paragraphs are drawn at random (``seed``) among those that are not among the ``exclude``
paragraphs BM25 ranks most relevant to the question, so a demonstration never comes from (and never gives away) the
paragraph that answers the question, as far as BM25 finds it.

Past the model's window, ``budget=N`` first keeps the paragraphs BM25 ranks most relevant to the question within
N context tokens (the sink included), exactly as ``select:budget=N`` keeps them, in document order or (``order=
relevance``) from the least to the most relevant; only those are numbered (1..k in reading order) and demonstrations
come only from them. The labels and demonstrations come on top of the budget (about 5 tokens a paragraph and 40 a
demonstration). A context within the budget is read whole, as without one.

``demos=0`` hands the prompt to the plain model unchanged.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from longreach.generation import Generation, Request
from longreach.methods.readers.base import ReaderMethod, ReadingEngine
from longreach.methods.readers.retrieval import bm25_scores
from longreach.methods.readers.select import Order, Select
from longreach.methods.readers.units import Cut, cut_units, leading, split_sentences, time_now, with_reading_cost
from longreach.methods.spec import register
from longreach.params import require

if TYPE_CHECKING:
    from longreach.methods.spec import MethodStack

_FACT = re.compile(
    r"^(?P<subject>[A-Za-z][^.?!:\n]{2,100}?)\s+(?P<verb>is|are|was|were)\s*:?\s+(?P<value>[^?!\n]{1,60}?)\s*[.!]?$"
)

_CLAUSE_END = re.compile(r",|;| and | but | while ")


@dataclass(frozen=True)
class Demonstration:
    paragraph: int  # index into the cut's units
    number: int  # its "Paragraph i" label
    question: str
    answer: str


@register
@dataclass(frozen=True)
class Recycle(ReaderMethod):
    """DoubleDipper: numbered paragraphs and template QA demonstrations from other paragraphs of the context."""

    demos: int = field(default=3, metadata={"help": "demonstrations placed before the question (0: plain model)"})
    unit: int = field(default=128, metadata={"help": "longest paragraph in tokens (sentences packed)"})
    sink: int = field(default=32, metadata={"help": "leading context tokens kept unlabelled (instructions)"})
    exclude: int = field(default=1, metadata={"help": "paragraphs most relevant to the question (BM25) never used"})
    seed: int = field(default=0, metadata={"help": "which paragraphs are drawn"})
    budget: int = field(default=0, metadata={"help": "context tokens kept by BM25 selection first (0: all)"})
    order: Order = field(default="document", metadata={"help": "budget: kept paragraphs by document or relevance"})

    name: ClassVar[str] = "recycle"
    example: ClassVar[str] = "recycle:unit=64:sink=16"
    summary: ClassVar[str] = "DoubleDipper: numbered paragraphs + QA demonstrations recycled from other paragraphs"
    paper: ClassVar[str] = "Cattan et al. 2024, DoubleDipper (recycling the context for demonstrations)"

    def __post_init__(self) -> None:
        require(self.demos >= 0, f"recycle: demos must be >= 0; got {self.demos}")
        require(self.unit >= 1, f"recycle: unit must be >= 1; got {self.unit}")
        require(self.sink >= 0 and self.exclude >= 0, "recycle: sink and exclude must be >= 0")
        budget_ok = self.budget == 0 or self.budget >= self.sink
        require(budget_ok, f"recycle: budget must be 0 (all) or >= sink ({self.sink}); got {self.budget}")
        require(self.budget > 0 or self.order == "document", "recycle: order applies with a budget (budget=N)")

    def read(self, engine: ReadingEngine, request: Request, inner: MethodStack) -> Generation:
        if self.demos == 0:
            return engine.complete(engine.encode(request.prompt), request, inner)[0]
        start = time_now()
        special = engine.encode("")
        cut = cut_units(engine.tokenizer, request.prompt, len(request.context), self.unit, pack=True, head=self.sink)
        kept = self.kept(engine, inner, cut, special)
        prompt_ids = self.prompt_ids(engine.tokenizer, cut, special, kept)
        generation, _ = engine.complete(prompt_ids, request, inner)
        return with_reading_cost(generation, time_now() - start, len(special) + cut.context_tokens + len(cut.question))

    def kept(self, engine: ReadingEngine, inner: MethodStack, cut: Cut, special: list[int]) -> list[int]:
        """The paragraphs read, sink first, in reading order: all of them, or those ``select`` keeps within
        ``budget``."""
        if self.budget == 0 or cut.context_tokens <= self.budget:
            return list(range(len(cut.units)))
        selector = Select(retriever="bm25", budget=self.budget, unit=self.unit, sink=self.sink, order=self.order)
        return selector.choose(engine, inner, cut, special)

    def prompt_ids(self, tokenizer: Any, cut: Cut, special: list[int], kept: list[int] | None = None) -> list[int]:
        """[special] + sink + the numbered paragraphs (``kept``, default all, in that order) + the demonstrations +
        the question."""

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        kept = list(range(len(cut.units))) if kept is None else kept
        sink = leading(cut.units, self.sink)
        paragraphs = [i for i in kept if i >= len(sink)]
        ids = special + cut.ids(sink)
        for number, i in enumerate(paragraphs, start=1):
            space = "" if cut.text(i)[:1].isspace() else " "  # a word token may carry the space itself
            ids += encode(f"\nParagraph {number}:{space}") + cut.units[i]
        for demo in self.demonstrations(tokenizer, cut, paragraphs):
            text = f"\n\nQuestion: {demo.question}\nAnswer: The relevant paragraph is Paragraph {demo.number}. "
            ids += encode(text + demo.answer)
        return ids + cut.question

    def demonstrations(self, tokenizer: Any, cut: Cut, paragraphs: list[int] | None = None) -> list[Demonstration]:
        """Up to ``demos`` template QA pairs, each from its own paragraph among ``paragraphs`` (default: every one
        after the sink, in reading order: a demonstration's number is its place there), none from the ``exclude``
        paragraphs most relevant to the question."""
        if paragraphs is None:
            paragraphs = list(range(len(leading(cut.units, self.sink)), len(cut.units)))
        if not paragraphs:
            return []
        question = tokenizer.decode(cut.question, skip_special_tokens=True).strip()
        scores = bm25_scores([cut.text(i) for i in paragraphs], question)
        ranked = sorted(range(len(paragraphs)), key=lambda k: (-scores[k], k))
        excluded = {paragraphs[k] for k in ranked[: self.exclude]}
        facts, clozes = [], []
        for i in paragraphs:
            if i in excluded:
                continue
            pair = template_pair(cut.text(i))
            if pair is not None:
                (facts if pair[2] else clozes).append((i, pair[0], pair[1]))
        rng = random.Random(self.seed)
        rng.shuffle(facts)
        rng.shuffle(clozes)
        chosen, asked = [], set()
        for i, q, a in facts + clozes:
            if q not in asked and len(chosen) < self.demos:
                chosen.append(Demonstration(i, paragraphs.index(i) + 1, q, a))
                asked.add(q)
        return chosen


def template_pair(paragraph: str) -> tuple[str, str, bool] | None:
    """(question, answer, is_fact) from the paragraph's first "X is Y" sentence, else a cloze on its first sentence
    of five or more words; None when neither exists."""
    sentences = [s.strip() for s in split_sentences(paragraph) if s.strip()]
    for sentence in sentences:
        match = _FACT.match(sentence)
        if match and not match["value"].strip().endswith(":"):
            subject = match["subject"].strip()
            value = _CLAUSE_END.split(match["value"])[0].strip()  # "wet and the brook was fancy" -> "wet"
            return f"What {match['verb']} {subject[0].lower()}{subject[1:]}?", value, True
    for sentence in sentences:
        words = sentence.split()
        if len(words) >= 5:
            last = words[-1].strip(".,;:!?\"'")
            if last:
                return f'Which word ends this sentence: "{" ".join(words[:-1])} ..."?', last, False
    return None
