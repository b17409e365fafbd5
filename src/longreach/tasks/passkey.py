"""Passkey retrieval (Mohtashami & Jaggi 2023, Landmark Attention, ``llama/run_test.py``).

A number hidden in a haystack of one repeated filler sentence; the prompt ends with
``What is the pass key? The pass key is`` and the model continues. Deviations from the original, which
sized the haystack in characters: the length is exact in the model's tokenizer, the depth is a knob
(not uniform random), and the key has ``digits`` digits (default 5; the original drew 1..50000).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import NOISE

HEAD = (
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
    "I will quiz you about the important information there.\n"
)
QUESTION = "\nWhat is the pass key?"
ANSWER_PREFIX = " The pass key is"


@register_family
@dataclass(frozen=True)
class Passkey(Task):
    """Find the pass key; score 1 when the key appears in the answer as a whole number."""

    digits: int = field(default=5, metadata={"help": "digits of the pass key"})
    max_new_tokens: int = field(default=12, metadata={"help": "generation budget"})

    family: ClassVar[str] = "passkey"
    summary: ClassVar[str] = "a number hidden in repeated filler (Landmark Attention's passkey test)"
    diffusion: ClassVar[Level] = "low"  # the only number in a repeated filler, cued by its own words
    scope: ClassVar[Level] = "low"  # one number

    def __post_init__(self) -> None:
        require(1 <= self.digits <= 20, f"passkey: digits must be in 1..20; got {self.digits}")
        require(self.max_new_tokens >= 1, f"passkey: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        probe = rng.stream(seed, "passkey", "probe", self.digits, depth, index)
        key = words.number(probe, self.digits)
        needle = f"The pass key is {key}. Remember it. {key} is the pass key."
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=HEAD,
            question=QUESTION,
            answer_prefix=ANSWER_PREFIX,
            frame=frame,
            needles=[fitting.Needle(needle, depth)],
            unit=lambda i: NOISE,
            sep=" ",
            needle_sep="\n",
        )
        return Sample.from_fit(
            fitted,
            task="passkey",
            answers=(key,),
            max_new_tokens=self.max_new_tokens,
            stop=("\n", "."),
            match="all",
            random_baseline=1 / (9 * 10 ** (self.digits - 1)),  # a uniform guess of a number of that size
        )

    def score(self, sample: Sample, prediction: str) -> float:
        return scoring.match_all(sample.answers, prediction)
