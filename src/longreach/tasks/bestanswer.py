"""Best answer among many (Wang et al. 2024, Ada-LEval BestAnswer, ``ada_leval/dataset.py``), generated.

Ada-LEval asks for the most helpful of many Stack Overflow answers to one question; here a generated word problem
(:mod:`longreach.tasks.problems`) has many candidate worked solutions, labelled ``A`` + 5 digits, and exactly
one of them computes every step correctly. Each other candidate has a slip: a step off by 1, 2 or 10 and carried
on, the right answer reached through a wrong step, or right steps with another number stated as the answer; they
are phrased three ways, so neither the right first step, nor the right answer, nor the wording singles out the
correct candidate (with many candidates some distractors repeat). As in Ada-LEval, the number of candidates sets
the length; the correct one sits at the requested depth. Labels are random (not A1..An) so that the correct
candidate's label is the same at every length.

Score: 1 when the answer names exactly one candidate label (``A12345`` or its bare number) and it is the correct
one; Ada-LEval takes the highest label named, which with random labels has no meaning, and naming several here
is never better than one guess. Random baseline: one of the complete candidates shown, uniformly, 1/candidates.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, problems, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

_LABEL = re.compile(r"(?<![0-9A-Za-z])A?(\d{5})(?![0-9A-Za-z])")
_DELTAS = (-10, -2, -1, 1, 2, 10)


@register_family
@dataclass(frozen=True)
class BestAnswer(Task):
    """Name the one candidate solution that is right in every step."""

    max_new_tokens: int = field(default=16, metadata={"help": "generation budget"})

    family: ClassVar[str] = "bestanswer"
    summary: ClassVar[str] = "Ada-LEval BestAnswer: the one correct worked solution among many; length = candidates"
    diffusion: ClassVar[Level] = "high"  # the correct candidate differs from the others only in its arithmetic
    scope: ClassVar[Level] = "high"  # every candidate must be checked to rule it out

    def __post_init__(self) -> None:
        require(self.max_new_tokens >= 1, f"bestanswer: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        probe = rng.stream(seed, "bestanswer", "probe", index)
        filler_rng = rng.stream(seed, "bestanswer", "filler", context_length, depth, index)
        question = problems.problem(probe)
        gold = f"A{words.number(probe, 5)}"
        right = f"Answer {gold}: {problems.solution(question.steps, probe.randrange(3))}"
        taken = {gold[1:]}

        def distractor() -> str:
            label = words.unique(filler_rng, lambda r: words.number(r, 5), 1, taken)[0]
            return f"Answer A{label}: {_wrong(filler_rng, question)}"

        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=f"Below are a question and candidate answers to it.\n\nQuestion: {question.text}\n\n",
            question=(
                "\n\nWhich candidate answer to the question above is correct in every step? Answer with its "
                "designation only (the A-number in front of it)."
            ),
            answer_prefix="\nAnswer: The designation of the best answer is",
            frame=frame,
            needles=[fitting.Needle(right, depth)],
            unit=drawn_units(distractor),
            sep="\n",
            needle_sep="\n",
        )
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=(gold,),
            max_new_tokens=self.max_new_tokens,
            stop=("\n",),
            evidence=[gold],
            candidates=fitted.filler_units + 1,
            random_baseline=round(1 / (fitted.filler_units + 1), 8),
        )

    def reference_answer(self, sample: Sample) -> str:
        return f" {sample.answers[0]}."

    def score(self, sample: Sample, prediction: str) -> float:
        named = {f"A{number}" for number in _LABEL.findall(scoring.clean(prediction))}
        return float(named == {sample.answers[0]})


def _wrong(r: random.Random, question: problems.Problem) -> str:
    """A worked solution with one slip: a miscomputed step, or right steps and another answer stated."""
    style = r.randrange(3)
    if r.randrange(4):
        return problems.solution(problems.wrong_steps(r, question), style)
    return problems.solution(question.steps, style, stated=question.answer + r.choice(_DELTAS))
