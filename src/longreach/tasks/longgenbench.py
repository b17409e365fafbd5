"""Many questions, one long answer (Liu et al. 2024, "LongGenBench: Long-context Generation Benchmark", arXiv
2410.04199, ``longgenbench_GSM8K_openai.py``; not Wu et al.'s renamed "Spinning the Golden Thread", see
:mod:`longreach.tasks.golden_thread`).

``num_questions`` generated word problems (:mod:`longreach.tasks.problems`, GSM8K stand-ins) are asked at once as
``Question_1`` .. ``Question_K``; the model answers all of them in order in one response, each answer opened by
``Answer_i:`` and closed by ``The answer is N.`` (the answer is prefilled with ``Answer_1:``). The context before
them is LongGenBench's instruction and worked examples in its answer style; more examples fill longer prompts
(the paper prepends 8). The questions are the first ``num_questions`` after ``offset`` of one list per sample,
so ``num_questions=1:offset=j`` asks question j+1 alone: the single-question baseline the paper compares with.

Score: the mean over questions of LongGenBench's rule (the last number of the answer equals the gold), the
answers aligned by their ``Answer_i`` labels rather than by order (the paper's order alignment lets one skipped
answer shift all later ones). :func:`correct_by_index` gives the per-question outcome from a stored prediction
and its answers, for the decay of accuracy with the question's position. Random baseline: each answer a
uniform integer in 1..999 (every gold lies there), 1/999.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, problems, rng, scoring
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

_INSTRUCTION = (
    "Answer each question step by step, adhering to the format shown in the examples provided. Start each response "
    "with 'Answer_' and introduce the final response with 'The answer is'. Do not repeat the question. Ensure that "
    "you respond to all the questions presented, regardless of their number."
)
_LABEL = re.compile(r"Answer_(\d+)\s*:")


@register_family
@dataclass(frozen=True)
class LongGenBench(Task):
    """Answer many questions in order in one long response."""

    num_questions: int = field(default=10, metadata={"help": "questions answered in one response (K)"})
    offset: int = field(default=0, metadata={"help": "questions of the sample's list skipped before the K asked"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget (0: 64 tokens a question)"})

    family: ClassVar[str] = "longgenbench"
    summary: ClassVar[str] = "LongGenBench (Liu et al.): K questions answered in order in one long response"
    uses_depth: ClassVar[bool] = False
    diffusion: ClassVar[Level] = "low"  # the questions stand together after the examples, each self-contained
    scope: ClassVar[Level] = "high"  # every one of the K questions must be answered

    def __post_init__(self) -> None:
        k = self.num_questions
        require(1 <= k <= 200, f"longgenbench: num_questions must be in 1..200; got {k}")
        require(0 <= self.offset <= 1000, f"longgenbench: offset must be in 0..1000; got {self.offset}")
        require(self.max_new_tokens >= 0, f"longgenbench: max_new_tokens must be >= 0; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        probe = rng.stream(seed, "longgenbench", "probe", index)  # one list per sample, whatever K and offset
        filler_rng = rng.stream(seed, "longgenbench", "filler", context_length, index)
        asked = [problems.problem(probe) for _ in range(self.offset + self.num_questions)][self.offset :]
        question = (
            "\n\nFollowing questions:\n"
            + "\n".join(f"Question_{i}: {p.text}" for i, p in enumerate(asked, 1))
            + f"\n\nAnswer all {len(asked)} questions in order, starting each answer with 'Answer_i:' (i is the "
            "question's number) and ending it with 'The answer is N.'."
        )

        def example() -> str:
            shown = problems.problem(filler_rng)
            return f"Question: {shown.text}\nAnswer: {problems.solution(shown.steps)}"

        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=f"{_INSTRUCTION}\n\nExamples:\n",
            question=question,
            answer_prefix="\nAnswer_1:",
            frame=frame,
            needles=[],
            unit=drawn_units(example),
            sep="\n\n",
            needle_sep="\n\n",
        )
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(str(p.answer) for p in asked),
            max_new_tokens=self.max_new_tokens or 64 * len(asked),
            random_baseline=round(1 / problems.MAX_ANSWER, 6),
        )

    def reference_answer(self, sample: Sample) -> str:
        lines = [f"Answer_{i}: The answer is {gold}." for i, gold in enumerate(sample.answers, 1)]
        return " " + "\n".join(lines)[len("Answer_1: ") :]

    def score(self, sample: Sample, prediction: str) -> float:
        outcomes = correct_by_index(prediction, sample.answers)
        return sum(outcomes) / len(outcomes)


def answers_by_index(prediction: str) -> dict[int, str]:
    """Question number -> the text of its answer (the prefilled ``Answer_1:`` put back in front; the first answer
    labelled i counts; an echoed ``Question_`` line ends an answer)."""
    parts = _LABEL.split("Answer_1:" + scoring.clean(prediction))
    found: dict[int, str] = {}
    for number, text in zip(parts[1::2], parts[2::2], strict=True):
        found.setdefault(int(number), text.split("Question_")[0])
    return found


def correct_by_index(prediction: str, answers: tuple[str, ...] | list[str]) -> list[bool]:
    """Per question, in order: is the last number of its answer the gold (LongGenBench's ``test_answer``)?"""
    found = answers_by_index(prediction)
    return [scoring.last_integer(found.get(i, "")) == int(gold) for i, gold in enumerate(answers, 1)]
