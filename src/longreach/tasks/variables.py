"""Variable tracking (Hsieh et al. 2024, RULER ``vt``, ``scripts/data/synthetic/variable_tracking.py``).

Chains of assignments hidden in repeated noise: ``VAR ABCDE = 12345.`` then ``VAR FGHIJ = VAR ABCDE.`` and
so on for ``num_hops`` hops. ``num_chains - 1`` distractor chains start from other values. The question asks
for every variable that ends up holding the first chain's value; RULER's one-shot example (3-letter names,
re-randomised) is prepended unless ``icl=false``. Chain statements keep their order in the text. The
requested depth places the first chain's first statement; its later hops sit between it and the end;
distractor statements sit at depths from the probe stream.

Score: ``recall`` (RULER's string_match_all: the fraction of gold names present) or ``f1`` (names of
distractor variables in the answer count against it). Random baseline: answering one chain's names at
random, i.e. ``1 / num_chains``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import NOISE

HEAD = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"


def _question(value: str, count: int) -> tuple[str, str]:
    """RULER's question and its answer prefix."""
    return (
        f"\nQuestion: Find all variables that are assigned the value {value} in the text above.",
        f" Answer: According to the chain(s) of variable assignment in the text above, {count} variables are "
        f"assigned the value {value}, they are:",
    )


def _statements(names: list[str], value: str) -> list[str]:
    return [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:], strict=False)]


@register_family
@dataclass(frozen=True)
class VariableTracking(Task):
    """Find every variable in a chain of assignments, among distractor chains."""

    num_chains: int = field(default=1, metadata={"help": "chains in the text (the first is asked for)"})
    num_hops: int = field(default=4, metadata={"help": "assignments after the first in each chain"})
    icl: bool = field(default=True, metadata={"help": "prepend RULER's one-shot example"})
    metric: Literal["recall", "f1"] = field(default="recall", metadata={"help": "recall (RULER) | f1"})
    max_new_tokens: int = field(default=30, metadata={"help": "generation budget (RULER: 30)"})

    family: ClassVar[str] = "variables"
    summary: ClassVar[str] = "RULER variable tracking: multi-hop assignment chains among distractor chains"
    diffusion: ClassVar[Level] = "high"  # a chain is found only by following assignments, among distractor chains
    scope: ClassVar[Level] = "low"  # the few names of one chain

    def __post_init__(self) -> None:
        require(1 <= self.num_chains <= 32, f"variables: num_chains must be in 1..32; got {self.num_chains}")
        require(1 <= self.num_hops <= 32, f"variables: num_hops must be in 1..32; got {self.num_hops}")
        require(self.max_new_tokens >= 1, f"variables: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"variables/{self.num_chains}/{self.num_hops}"
        probe = rng.stream(seed, name, "probe", depth, index)
        taken: set[str] = set()
        values = words.unique(probe, lambda r: str(r.randint(10000, 99999)), self.num_chains, taken)
        chains = [words.unique(probe, lambda r: words.letters(r, 5), self.num_hops + 1, taken) for _ in values]
        needles = []
        for c, (names, value) in enumerate(zip(chains, values, strict=True)):
            start = depth if c == 0 else round(probe.random(), 4)
            later = sorted(round(start + (1 - start) * probe.random(), 4) for _ in names[1:])
            for hop, (text, hop_depth) in enumerate(zip(_statements(names, value), [start, *later], strict=True)):
                needles.append(fitting.Needle(text, hop_depth, rank=hop))
        head = HEAD + (self._example(probe) if self.icl else "")
        question, answer_prefix = _question(values[0], self.num_hops + 1)
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=head,
            question=question,
            answer_prefix=answer_prefix,
            frame=frame,
            needles=needles,
            unit=lambda i: NOISE,
            sep=" ",
            needle_sep="\n",
        )
        all_names = [n for names in chains for n in names]
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(chains[0]),
            max_new_tokens=self.max_new_tokens,
            stop=("\n",),
            value=values[0],
            all_names=all_names,
            metric=self.metric,
            random_baseline=round(1 / self.num_chains, 6),
        )

    def _example(self, probe: random.Random) -> str:
        """A short solved instance with 3-letter names (RULER's one-shot example)."""
        names = words.unique(probe, lambda r: words.letters(r, 3), self.num_hops + 1, set())
        value = str(probe.randint(10000, 99999))
        body = "\n".join(_statements(names, value))
        answer = " ".join(names)
        question = "".join(_question(value, len(names)))
        return f"Example:\n{NOISE}\n{body}{question} {answer}\n\nNow the real text.\n\n"

    def reference_answer(self, sample: Sample) -> str:
        return " " + " ".join(sample.answers)

    def score(self, sample: Sample, prediction: str) -> float:
        if self.metric == "recall":
            return scoring.match_all(sample.answers, prediction)
        return scoring.f1(scoring.found(sample.meta["all_names"], prediction), set(sample.answers))
