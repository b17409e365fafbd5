"""``summarize``: summarization-based context management, the inference side of SUPO (Lu et al. 2025, "Scaling LLM
Multi-turn RL with End-to-end Summarization-based Context Management", arXiv 2510.06727).

The model never holds more than ``budget`` tokens (prompt + what it generates). The prompt is tokenized once and
its context cut by token offsets into passages (sentences of a paragraph packed up to ``unit`` tokens, see
:mod:`longreach.methods.readers.units`); the first ``sink`` context tokens (the task's instructions, SUPO's x0) are
kept verbatim. While sink + summary + the unread passages + question + the answer's ``max_new_tokens`` exceed the
budget, the oldest passages that fit beside the sink, the running summary, the instruction and ``summary_tokens``
of new text are summarized by the model itself:

  [special] + sink + "Summary of the earlier text: " s + oldest passages
    + "Write a short summary of the text above that keeps every fact (names, numbers, keys) needed to answer this
       question: <question>\\nSummary:"          -> s (greedy, at most ``summary_tokens``, cut at a blank line)

so the new summary replaces the old one and those passages (SUPO's W = [x0, s], cache reset). The question is known
here (it is the task), so the summary instruction names it. Then the model answers from
[special] + sink + summary + the remaining passages + question. The effective context is about the working length
times (summaries + 1). SUPO trains the summarizing skill with RL; an untrained model summarizes as well as it can.

When the prompt and the answer fit in ``budget``, the prompt goes to the plain model unchanged: the answer equals
the unmodified model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from longreach.errors import LongreachError
from longreach.generation import Generation, Request
from longreach.methods.readers.base import ReaderMethod, ReadingEngine
from longreach.methods.readers.units import Cut, cut_units, leading, time_now, with_reading_cost
from longreach.methods.spec import register
from longreach.params import require

if TYPE_CHECKING:
    from longreach.methods.spec import MethodStack

INSTRUCTION = (
    "\n\nWrite a short summary of the text above that keeps every fact (names, numbers, keys) needed to answer this "
    "question: {question}\nSummary:"
)
SUMMARY_HEADER = "\nSummary of the earlier text:"


@register
@dataclass(frozen=True)
class Summarize(ReaderMethod):
    """SUPO-style reading: the oldest passages are replaced by the model's running summary until the rest fits."""

    budget: int = field(default=4096, metadata={"help": "most tokens the model holds at once (prompt + generated)"})
    summary_tokens: int = field(default=128, metadata={"help": "longest summary the model writes"})
    unit: int = field(default=128, metadata={"help": "longest passage in tokens (sentences of a paragraph packed)"})
    sink: int = field(default=64, metadata={"help": "leading context tokens always kept verbatim (instructions)"})

    name: ClassVar[str] = "summarize"
    example: ClassVar[str] = "summarize:budget=384:summary_tokens=8:unit=32:sink=16"
    summary: ClassVar[str] = "SUPO inference: summarize the oldest passages until the rest fits in a budget"
    paper: ClassVar[str] = "Lu et al. 2025, SUPO (summarization-based context management)"
    bounded_memory: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for name in ("budget", "summary_tokens", "unit"):
            require(getattr(self, name) >= 1, f"summarize: {name} must be >= 1; got {getattr(self, name)}")
        require(0 <= self.sink < self.budget, f"summarize: sink must be in 0..budget-1; got {self.sink}")

    def read(self, engine: ReadingEngine, request: Request, inner: MethodStack) -> Generation:
        start = time_now()
        special = engine.encode("")
        cut = cut_units(engine.tokenizer, request.prompt, len(request.context), self.unit, pack=True, head=self.sink)
        prompt_tokens = len(special) + cut.context_tokens + len(cut.question)
        if prompt_tokens + request.max_new_tokens <= self.budget:  # fits: the plain model reads the prompt
            return engine.complete(engine.encode(request.prompt), request, inner)[0]
        prompt_ids, _ = self.working_prompts(engine, request, inner, cut, special)
        generation, _ = engine.complete(prompt_ids, request, inner)
        return with_reading_cost(generation, time_now() - start, prompt_tokens)

    def working_prompts(
        self, engine: ReadingEngine, request: Request, inner: MethodStack, cut: Cut, special: list[int]
    ) -> tuple[list[int], list[list[int]]]:
        """The final prompt's ids and every summarization prompt's ids, in order (each with ``summary_tokens``
        fits in ``budget``)."""
        tokenizer = engine.tokenizer

        def encode(text: str) -> list[int]:
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        question = tokenizer.decode(cut.question, skip_special_tokens=True).strip()
        instruction = encode(INSTRUCTION.format(question=question))
        head = special + cut.ids(leading(cut.units, self.sink))
        rest = list(range(len(leading(cut.units, self.sink)), len(cut.units)))
        summary: list[int] = []
        steps: list[list[int]] = []

        def block() -> list[int]:
            return encode(SUMMARY_HEADER) + summary + encode("\n\n") if summary else []

        def answer_length() -> int:
            passages = sum(len(cut.units[i]) for i in rest)
            return len(head) + len(block()) + passages + len(cut.question) + request.max_new_tokens

        while rest and answer_length() > self.budget:
            room = self.budget - len(head) - len(block()) - len(instruction) - self.summary_tokens
            taken: list[int] = []
            while rest and sum(len(cut.units[i]) for i in taken) + len(cut.units[rest[0]]) <= room:
                taken.append(rest.pop(0))
            if not taken:
                raise LongreachError(
                    f"summarize: budget={self.budget} leaves {room} tokens beside the sink, the summary, the "
                    f"instruction and summary_tokens={self.summary_tokens}, fewer than the next passage's "
                    f"{len(cut.units[rest[0]])}; raise budget or lower unit, sink or summary_tokens"
                )
            step = head + block() + cut.ids(taken) + instruction
            steps.append(step)
            written, _ = engine.complete(step, Request("", self.summary_tokens, ("\n\n",)), inner)
            summary = encode(" " + written.text.strip())
        return head + block() + cut.ids(rest) + cut.question, steps
