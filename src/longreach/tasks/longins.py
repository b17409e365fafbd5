"""Grade a long exam (Gavin et al. 2024, LongIns, arXiv 2406.17588, ``infer/data_loader.py``, ``eval.py``).

Many completed questions, each an input and a proposed answer of a small machine-checkable task (add two numbers,
write a word backwards, sort numbers, find a weekday, pick the largest number); ``n_errors`` of them are answered
wrongly, plausibly (off by one or ten, two neighbours swapped, the neighbouring day, the second largest). The model
lists the numbers of the wrongly answered questions. ``layout`` is LongIns's: ``gist`` gives the task's
instruction once before all questions, ``list`` repeats it in every question, ``limt`` mixes the tasks, each
question with its own instruction. ``subject`` picks the task of gist and list (random by default).

Questions are numbered with distinct random 5-digit numbers, written after the answer (``(question 48213)``): the
wrong ones are the probe, so the same numbers are wrong at every length, and a question cut short at the end of
the haystack has no number to list. LongIns holds the share of wrong answers near 10% as its exams grow; here
their number is fixed and the correct questions fill the length.

Score: LongIns's F1 between the integers inside ``[...]`` in the answer and the wrong questions' numbers (0 when
nothing is listed). Random baseline: listing ``n_errors`` of the complete questions' numbers at random,
n_errors / questions.
"""

from __future__ import annotations

import datetime
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

Layout = Literal["gist", "list", "limt"]
Subject = Literal["random", "add", "reverse", "sort", "weekday", "largest"]
Item = tuple[str, str, str]  # (input, right answer, wrong answer)
DAYS = tuple(datetime.date(2018, 1, d).strftime("%A") for d in range(1, 8))  # Monday .. Sunday
_BRACKETS = re.compile(r"\[(.*?)\]", flags=re.DOTALL)


def _add(r: random.Random) -> Item:
    a, b = r.randint(10, 999), r.randint(10, 999)
    return f"{a} + {b}", str(a + b), str(a + b + r.choice((-10, -1, 1, 10)))


def _reverse(r: random.Random) -> Item:
    word = r.choice([w for w in words.word_list("nouns") if len(w) >= 4 and w.isalpha()])
    right = word[::-1]
    spots = [k for k in range(len(right) - 1) if right[k] != right[k + 1]]
    k = r.choice(spots)
    return word, right, right[:k] + right[k + 1] + right[k] + right[k + 2 :]


def _sort(r: random.Random) -> Item:
    numbers = r.sample(range(1, 100), 5)
    right = sorted(numbers)
    k = r.randrange(4)
    wrong = right[:k] + [right[k + 1], right[k]] + right[k + 2 :]
    return ", ".join(map(str, numbers)), ", ".join(map(str, right)), ", ".join(map(str, wrong))


def _weekday(r: random.Random) -> Item:
    day, n = r.randrange(7), r.randint(1, 30)
    right = (day + n) % 7
    return f"{n} days after {DAYS[day]}", DAYS[right], DAYS[(right + r.choice((-1, 1))) % 7]


def _largest(r: random.Random) -> Item:
    numbers = r.sample(range(10, 1000), 5)
    return ", ".join(map(str, numbers)), str(max(numbers)), str(sorted(numbers)[-2])


SUBJECTS: dict[str, tuple[str, Callable[[random.Random], Item]]] = {
    "add": ("Add the two numbers.", _add),
    "reverse": ("Write the word backwards, letter by letter.", _reverse),
    "sort": ("Sort the numbers in ascending order.", _sort),
    "weekday": ("Name the day of the week that comes the given number of days after the given day.", _weekday),
    "largest": ("Give the largest of the numbers.", _largest),
}


@register_family
@dataclass(frozen=True)
class LongIns(Task):
    """List the numbers of the wrongly answered questions of a long exam."""

    layout: Layout = field(default="gist", metadata={"help": "gist | list | limt (LongIns's three settings)"})
    subject: Subject = field(
        default="random", metadata={"help": "gist/list task: random | add | reverse | sort | weekday | largest"}
    )
    n_errors: int = field(default=3, metadata={"help": "wrongly answered questions"})
    max_new_tokens: int = field(default=48, metadata={"help": "generation budget"})

    family: ClassVar[str] = "longins"
    summary: ClassVar[str] = "LongIns: list the wrongly answered questions of a long exam (GIST / LIST / LIMT)"
    uses_depth: ClassVar[bool] = False
    diffusion: ClassVar[Level] = "high"  # nothing marks a wrong answer: each must be worked out
    scope: ClassVar[Level] = "high"  # every question of the exam must be checked

    def __post_init__(self) -> None:
        require(1 <= self.n_errors <= 50, f"longins: n_errors must be in 1..50; got {self.n_errors}")
        require(
            self.layout != "limt" or self.subject == "random", "longins: layout=limt mixes every subject; drop subject"
        )
        require(self.max_new_tokens >= 1, f"longins: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"longins/{self.layout}/{self.subject}/{self.n_errors}"
        probe = rng.stream(seed, name, "probe", index)
        filler_rng = rng.stream(seed, name, "filler", context_length, index)
        subject = self.subject if self.subject != "random" else probe.choice(sorted(SUBJECTS))
        taken: set[str] = set()
        wrong = words.unique(probe, lambda r: words.number(r, 5), self.n_errors, taken)
        needles = [fitting.Needle(self._question(probe, subject, number, True), probe.random()) for number in wrong]

        def correct() -> str:
            number = words.unique(filler_rng, lambda r: words.number(r, 5), 1, taken)[0]
            return self._question(filler_rng, subject, number, False)

        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=self._head(subject),
            question=(
                "\n\nWhich questions were answered incorrectly? Give the question numbers of the incorrect answers, "
                "enclosed in brackets and separated by commas."
            ),
            answer_prefix="\nAnswer:",
            frame=frame,
            needles=needles,
            unit=drawn_units(correct),
            sep="\n",
            needle_sep="\n",
        )
        questions = fitted.filler_units + self.n_errors
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(sorted(wrong)),
            max_new_tokens=self.max_new_tokens,
            stop=("\n",),
            subject=subject if self.layout != "limt" else "mixed",
            questions=questions,
            random_baseline=round(self.n_errors / questions, 8),
        )

    def _head(self, subject: str) -> str:
        grader = "You are an excellent grading teacher, and you will be given many completed questions."
        if self.layout == "gist":
            return (
                f"{grader} The requirements for these questions are as follows: {SUBJECTS[subject][0]}\nPlease "
                "identify all the questions that have been answered incorrectly according to the requirements.\n\n"
            )
        return (
            f"{grader} Each question states its own requirement. Please identify all the questions that have been "
            "answered incorrectly according to their requirements.\n\n"
        )

    def _question(self, r: random.Random, subject: str, number: str, wrong: bool) -> str:
        """One completed question; its subject is drawn from ``r`` in the limt layout."""
        if self.layout == "limt":
            subject = r.choice(sorted(SUBJECTS))
        instruction, make = SUBJECTS[subject]
        given, right, mistaken = make(r)
        answer = mistaken if wrong else right
        asked = f"Input: {given}" if self.layout == "gist" else f"Instruction: {instruction} Input: {given}"
        return f"{asked} Answer: {answer} (question {number})"

    def reference_answer(self, sample: Sample) -> str:
        return " [" + ", ".join(sample.answers) + "]"

    def score(self, sample: Sample, prediction: str) -> float:
        inside = " ".join(_BRACKETS.findall(scoring.clean(prediction)))
        listed = {str(int(number)) for number in re.findall(r"\d+", inside)}
        return scoring.f1(listed, set(sample.answers)) if listed else 0.0
