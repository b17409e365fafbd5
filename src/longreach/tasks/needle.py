"""RULER-style needle-in-a-haystack family (Hsieh et al. 2024, RULER, ``scripts/data/synthetic/niah.py``).

Needles read ``One of the special magic {type} for {key} is: {value}.``; ``num_keys`` keys each carry
``num_values`` values and ``num_queries`` of the keys are asked for. The haystack is repeated ``noise``,
generated ``prose`` (our stand-in for RULER's essays, which are copyrighted) or ``needles`` (a haystack made
entirely of distractor needles). The requested depth places the first queried needle; the other needles
sit at depths drawn from the sample's probe stream. Score: fraction of gold values present
(RULER string_match_all), with token-boundary-aware matching.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import NOISE, prose_units

ValueType = Literal["numbers", "words", "uuids"]
Haystack = Literal["noise", "prose", "needles"]


@register_family
@dataclass(frozen=True)
class NeedleTask(Task):
    """Retrieve the values of the queried keys among ``num_keys`` needles."""

    num_keys: int = field(default=1, metadata={"help": "needles with distinct keys (>= num_queries)"})
    num_values: int = field(default=1, metadata={"help": "values per key"})
    num_queries: int = field(default=1, metadata={"help": "keys asked for"})
    key_type: ValueType = field(default="words", metadata={"help": "numbers | words | uuids"})
    value_type: ValueType = field(default="numbers", metadata={"help": "numbers | words | uuids"})
    haystack: Haystack = field(default="prose", metadata={"help": "noise | prose | needles"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget (0: 32 single, 128 multi)"})

    family: ClassVar[str] = "needle"
    summary: ClassVar[str] = "RULER NIAH: keys -> values hidden in noise, prose or distractor needles"
    diffusion: ClassVar[Level] = "low"  # the queried key stands verbatim in its needle (num_keys adds distractors)
    scope: ClassVar[Level] = "low"  # one to a few values

    def __post_init__(self) -> None:
        for name in ("num_keys", "num_values", "num_queries"):
            value = getattr(self, name)
            require(1 <= value <= 64, f"needle: {name} must be in 1..64; got {value}")
        require(
            self.num_queries <= self.num_keys,
            f"needle: num_queries ({self.num_queries}) must be <= num_keys ({self.num_keys})",
        )
        require(self.max_new_tokens >= 0, f"needle: max_new_tokens must be >= 0; got {self.max_new_tokens}")

    @property
    def single(self) -> bool:
        return self.num_queries * self.num_values == 1

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"needle/{self.num_keys}/{self.num_values}/{self.num_queries}/{self.key_type}/{self.value_type}"
        probe = rng.stream(seed, name, "probe", self.haystack, depth, index)
        # The haystack depends on the length only (as RULER's one essay): samples differ in their needles,
        # and consecutive samples share a prefix that a backend can reuse.
        filler_rng = rng.stream(seed, name, "filler", self.haystack, context_length)
        taken: set[str] = set()
        keys = words.unique_values(probe, self.key_type, self.num_keys, taken)
        values = [words.unique_values(probe, self.value_type, self.num_values, taken) for _ in keys]
        queried = sorted(probe.sample(range(self.num_keys), self.num_queries))
        needles = self._place(probe, keys, values, queried, depth)
        unit = self._filler(filler_rng, taken)
        head, question, answer_prefix = self._templates([keys[q] for q in queried])
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=head,
            question=question,
            answer_prefix=answer_prefix,
            frame=frame,
            needles=needles,
            unit=unit,
            sep=" ",
            needle_sep=" ",
        )
        answers = tuple(v for q in queried for v in values[q])
        return Sample.from_fit(
            fitted,
            task="needle",
            answers=answers,
            max_new_tokens=self.max_new_tokens or (32 if self.single else 128),
            stop=("\n", ".") if self.single else ("\n\n",),
            keys=[keys[q] for q in queried],
            match="all",
            random_baseline=_guess(self.value_type),
        )

    def _needle(self, key: str, value: str) -> str:
        return f"One of the special magic {self.value_type} for {key} is: {value}."

    def _place(
        self, probe: random.Random, keys: list[str], values: list[list[str]], queried: list[int], depth: float
    ) -> list[fitting.Needle]:
        """The first queried needle at ``depth``; every other needle at a depth from the probe stream."""
        first = (queried[0], 0)
        needles = [fitting.Needle(self._needle(keys[first[0]], values[first[0]][0]), depth)]
        for k, key in enumerate(keys):
            for v, value in enumerate(values[k]):
                if (k, v) != first:
                    needles.append(fitting.Needle(self._needle(key, value), round(probe.random(), 4)))
        return needles

    def _filler(self, filler_rng: random.Random, taken: set[str]) -> Any:
        if self.haystack == "noise":
            return lambda i: NOISE
        if self.haystack == "prose":
            return prose_units(filler_rng)
        drawn: list[str] = []
        real = frozenset(taken)  # the needles' keys and values: no distractor may reuse one

        def distractor(i: int) -> str:
            # Distractor keys may repeat among themselves (never asked for): a 1M-token haystack holds more
            # distractors than there are distinct adjective-noun keys.
            while len(drawn) <= i:
                key = words.unique_values(filler_rng, self.key_type, 1, set(real))[0]
                value = words.VALUE_MAKERS[self.value_type](filler_rng)
                drawn.append(self._needle(key, value))
            return drawn[i]

        return distractor

    def _templates(self, query_keys: list[str]) -> tuple[str, str, str]:
        """RULER's niah template (head, question) and answer prefix, singularised when one value is asked for."""
        kind = self.value_type
        query = query_keys[0] if len(query_keys) == 1 else ", ".join(query_keys[:-1]) + ", and " + query_keys[-1]
        head = (
            f"Some special magic {kind} are hidden within the following text. Make sure to memorize it. "
            f"I will quiz you about the {kind} afterwards.\n"
        )
        question = f"\nWhat are all the special magic {kind} for {query} mentioned in the provided text?"
        answer_prefix = f" The special magic {kind} for {query} mentioned in the provided text are"
        if self.single:
            singular = kind[:-1]
            head = head.replace("Some special", "A special").replace(f"magic {kind} are", f"magic {singular} is")
            head = head.replace(f"the {kind} afterwards", f"the {singular} afterwards")
            question = question.replace("What are all", "What is").replace(f"magic {kind}", f"magic {singular}")
            answer_prefix = answer_prefix.replace(f"magic {kind}", f"magic {singular}").replace("text are", "text is")
        return head, question, answer_prefix

    def score(self, sample: Sample, prediction: str) -> float:
        return scoring.match_all(sample.answers, prediction)


def _guess(value_type: str) -> float:
    """Expected score of a uniform guess of one value of the asked type (RULER's values are random)."""
    space = {
        "numbers": 9 * 10**6,
        "words": len(words.word_list("adjectives")) * len(words.word_list("nouns")),
        "uuids": 2**122,
    }[value_type]
    return 1 / space
