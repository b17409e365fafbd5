"""The Task abstraction: a pure generator of exact-length samples plus a scorer.

``generate(tokenizer, context_length, depth, seed, index, frame=RAW) -> Sample`` and
``score(sample, prediction)`` in [0, 1]. ``frame`` is the prompt format (:mod:`longreach.prompts`): the
length is exact for the whole formatted prompt, chat template included. No I/O at generation time beyond
what a task was built from, no globals: every sample draws from its own RNG (see :mod:`longreach.tasks.rng`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from longreach import params
from longreach.errors import LongreachError
from longreach.prompts import RAW, PromptFormat
from longreach.registry import Registry

if TYPE_CHECKING:
    from longreach.tasks.fitting import Fitted


@dataclass(frozen=True)
class Sample:
    """One test instance. The backend reads ``prompt`` = ``frame.render(context, question, answer_prefix)``.

    The parts are unformatted: ``context`` (instructions + haystack) is what a question-agnostic method may
    see (and compress) before the question; ``question`` is the question alone; ``answer_prefix`` is the text
    the model continues from (``" The pass key is"``). In the ``raw`` frame the prompt is the three joined.
    ``meta`` holds realized_tokens, needle_token_offsets (token indices in ``encode(prompt)``),
    realized_depth, ``random_baseline`` (the expected score of a guess, stated per family) and generator details.
    """

    task: str
    context: str
    question: str
    answers: tuple[str, ...]
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    answer_prefix: str = ""
    frame: PromptFormat = RAW

    @property
    def prompt(self) -> str:
        return self.frame.render(self.context, self.question, self.answer_prefix)

    @property
    def question_offset(self) -> int:
        """Character offset in ``prompt`` where the part after the context begins (question, template
        suffix, answer prefix): ``prompt[:question_offset]`` is what a question-agnostic read may see."""
        return len(self.frame.head(self.context))

    @classmethod
    def from_fit(
        cls,
        fitted: Fitted,
        *,
        task: str,
        answers: Iterable[str],
        max_new_tokens: int,
        stop: tuple[str, ...] = (),
        **meta: Any,
    ) -> Sample:
        """A sample whose prompt is a fitted haystack: its context, question, answer prefix and frame, its
        length and placement facts (:meth:`Fitted.meta`) and the generator's own ``meta`` entries."""
        return cls(
            task=task,
            context=fitted.context,
            question=fitted.question,
            answers=tuple(answers),
            max_new_tokens=max_new_tokens,
            stop=stop,
            meta={**fitted.meta(), **meta},
            answer_prefix=fitted.answer_prefix,
            frame=fitted.frame,
        )


Level = Literal["low", "high"]


@dataclass(frozen=True)
class Task:
    """Base class: a frozen dataclass whose fields are the task's knobs (set from the spec string).

    ``diffusion`` and ``scope`` place the family on the grid of Goldman et al. 2024 ("Is It Really Long Context
    if All You Need Is Retrieval?", arXiv 2407.00402): how hard the needed information is to find (spread out,
    not lexically cued, among similar distractors, behind reasoning chains) and how much of it is needed. Every
    family states both, with its reason; None only where the instances are not ours to judge (``jsonl``).
    """

    family: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    uses_depth: ClassVar[bool] = True
    generated: ClassVar[bool] = True  # False: the family reads the user's files (jsonl, text, released
    # benchmarks): the generator contract (exact length, depth, random baseline) does not apply
    measures: ClassVar[str] = "answer"  # "answer": a reply is generated and scored; "loss": token losses (perplexity)
    diffusion: ClassVar[Level | None] = None
    scope: ClassVar[Level | None] = None

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        """The sample at these coordinates, its whole prompt in ``frame`` exactly ``context_length`` tokens."""
        raise NotImplementedError

    def score(self, sample: Sample, prediction: str) -> float:
        raise NotImplementedError

    def reference_answer(self, sample: Sample) -> str:
        """A prediction that scores 1.0: documents the answer format, and the contract tests use it."""
        return " " + ", ".join(sample.answers) + "."

    def num_instances(self) -> int | None:
        """How many distinct instances exist (None: unlimited, generated on demand)."""
        return None


@dataclass(frozen=True)
class TaskEntry:
    """A registered task name: a family class plus the knob values that define the variant."""

    family: type[Task]
    defaults: dict[str, Any]
    summary: str


# Families register themselves where they are defined; variants and suites are data (``variants.py``, ``suites.py``
# read ``data/*.yaml``). Both registries discover the modules of this package on first use.
FAMILIES: Registry[type[Task]] = Registry("task family", packages=("longreach.tasks",))
TASKS: Registry[TaskEntry] = Registry("task", packages=("longreach.tasks",))


register_family = FAMILIES.by("family")  # class decorator: a task family registers itself under its family name


@dataclass(frozen=True)
class ParsedTask:
    """A task instance together with its canonical spec (the ``task`` coordinate of results)."""

    spec: str
    task: Task


def parse_task(spec: str) -> ParsedTask:
    """``"niah_multikey_1:haystack=noise"`` -> the variant's task with that knob changed."""
    name, args = params.split_spec(spec)
    entry = TASKS.get(name)
    task = params.build(entry.family, name, args, defaults=entry.defaults)
    return ParsedTask(spec=params.canonical(name, task, entry.defaults), task=task)


def parse_tasks(text: str) -> list[ParsedTask]:
    """A comma-separated list of task specs; duplicates are dropped, order is kept."""
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise LongreachError(f"no task given in {text!r}; see `longreach tasks`")
    parsed: dict[str, ParsedTask] = {}
    for spec in specs:
        item = parse_task(spec)
        parsed.setdefault(item.spec, item)
    return list(parsed.values())
