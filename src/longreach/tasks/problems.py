"""Generated two-step arithmetic word problems with worked solutions, contamination-free stand-ins for the GSM8K
questions LongGenBench (Liu et al. 2024) batches into one prompt; Ada-LEval's BestAnswer stand-in
(:mod:`longreach.tasks.bestanswer`) asks which of many worked solutions of one problem is right.

A problem is two steps (``12 * 7 = 84``, ``84 - 5 = 79``); its answer, the last step's result, is an integer in
``1..MAX_ANSWER`` for every template. A wrong solution miscomputes at least one step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from longreach.tasks.words import word_list

MAX_ANSWER = 999
THINGS = ("apples", "marbles", "stamps", "pencils", "cards", "shells", "beads", "coins", "buttons", "stickers")
_OPS = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
_DELTAS = (-10, -2, -1, 1, 2, 10)


@dataclass(frozen=True)
class Step:
    """``left op right = result``; ``result`` may be miscomputed (in a wrong solution)."""

    left: int
    op: str
    right: int
    result: int

    def text(self) -> str:
        return f"{self.left} {self.op} {self.right} = {self.result}"


@dataclass(frozen=True)
class Problem:
    """The question in words and its right steps."""

    text: str
    steps: tuple[Step, ...]

    @property
    def answer(self) -> int:
        return self.steps[-1].result


def _step(left: int, op: str, right: int) -> Step:
    return Step(left, op, right, _OPS[op](left, right))


def problem(r: random.Random) -> Problem:
    """One problem of a random template, names and numbers drawn from ``r``."""
    name, things = r.choice(word_list("first_names")), r.choice(THINGS)
    shape = r.randrange(4)
    if shape == 0:
        a, b = r.randint(10, 99), r.randint(2, 60)
        c = r.randint(1, a)
        text = (
            f"{name} has {a} {things}. {name} buys {b} more and then gives {c} away. How many {things} does {name} "
            "have now?"
        )
        first = _step(a, "+", b)
        return Problem(text, (first, _step(first.result, "-", c)))
    if shape == 1:
        a, b = r.randint(3, 15), r.randint(2, 12)
        c = r.randint(1, a * b - 1)
        text = (
            f"A box holds {a} {things}. {name} fills {b} boxes and then gives away {c} {things}. How many {things} "
            f"does {name} have left?"
        )
        first = _step(a, "*", b)
        return Problem(text, (first, _step(first.result, "-", c)))
    if shape == 2:
        a, b, c = r.randint(5, 40), r.randint(2, 9), r.randint(1, 99)
        text = (
            f"{name} collects {a} {things} every day for {b} days and already had {c}. How many {things} does {name} "
            "have in total?"
        )
        first = _step(a, "*", b)
        return Problem(text, (first, _step(first.result, "+", c)))
    a = r.randint(10, 99)
    c, k = r.randint(1, a - 1), r.choice((2, 3))
    verb = "doubles" if k == 2 else "triples"
    text = (
        f"{name} had {a} {things} and lost {c} of them. Then {name} {verb} what is left. How many {things} does "
        f"{name} have now?"
    )
    first = _step(a, "-", c)
    return Problem(text, (first, _step(first.result, "*", k)))


def wrong_steps(r: random.Random, right: Problem) -> tuple[Step, ...]:
    """The steps with one slip drawn from ``r``: a step's result off by 1, 2 or 10 and the next step computed from
    it (a wrong answer), or the first step off and the second written with the right answer (the right answer by
    a wrong step). Either way at least one step is miscomputed."""
    first, second = right.steps
    slipped = Step(first.left, first.op, first.right, first.result + r.choice(_DELTAS))
    kind = r.randrange(3)
    if kind == 0:
        return slipped, _step(slipped.result, second.op, second.right)
    if kind == 1:
        return slipped, Step(slipped.result, second.op, second.right, second.result)
    return first, Step(second.left, second.op, second.right, second.result + r.choice(_DELTAS))


def solution(steps: tuple[Step, ...], style: int = 0, stated: int | None = None) -> str:
    """A worked solution in one of three phrasings (0 is LongGenBench's answer style), ending with ``the answer is
    N`` where N is ``stated`` or, by default, the last step's result."""
    first, second = (step.text() for step in steps)
    answer = steps[-1].result if stated is None else stated
    return (
        f"{first}. {second}. The answer is {answer}.",
        f"First, {first}. Then {second}. So the answer is {answer}.",
        f"We get {first}, and then {second}, which means the answer is {answer}.",
    )[style]
