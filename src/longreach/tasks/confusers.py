"""Confusers (Yuan et al. 2024, LV-Eval: confusing-fact insertion and keyword/phrase replacement).

An encyclopedic fact about a fictional town (``The town of Norwale was founded in 1871 by Ada K. Crane on
the banks of the Dravo.``) sits in generated prose at the requested depth. ``n_confusers`` near-duplicate
statements about towns whose names differ by one letter (``Norvale``, ``Morwale``) give other values for the
same facts, at depths from the probe stream. Every entity is invented (LV-Eval's renaming of entities), so
memorised knowledge cannot help. The question asks one fact (``fact``: year, founder or river). With
``answerable=false`` the true statement is left out and the answer is "not stated" (LongBioBench's IDK).
``confusing_facts`` inserts LV-Eval's confusing facts (CFI): statements about the asked town itself that read
like the evidence but tell of another event (``The town of Norwale was renamed in 1902 by ...``), at depths
from the probe stream.

Score (``scorer=match``): 1 when the true value is given and no wrong value is (answerable), or when the answer
says the fact is not stated (unanswerable). ``scorer=keyword_f1``: LV-Eval's metric, QA F1 against the true
value gated by its keyword recall (:func:`longreach.tasks.metrics.keyword_gated_f1`, the value as keywords).
Random baseline: picking one of the candidate values (true, confusers', confusing facts'): 1 / candidates under
``match``; under ``keyword_f1`` the mean score of the candidates, computed per sample (a wrong founder sharing a
name token with the true one scores partly). 0 when unanswerable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, metrics, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import prose_units

Fact = Literal["random", "year", "founder", "river"]
_FACTS = ("year", "founder", "river")
_VOWELS = "aeiou"
_EVENTS = ("renamed", "granted a charter", "flooded", "rebuilt", "surveyed", "first mapped")


def _similar(r: random.Random, name: str, taken: set[str]) -> str:
    """A name one letter away from ``name`` (vowel for vowel, consonant for consonant)."""
    for _ in range(1000):
        position = r.randrange(len(name))
        old = name[position].lower()
        pool = _VOWELS if old in _VOWELS else "bcdfghklmnprstvz"
        new = r.choice([c for c in pool if c != old])
        new = new.upper() if name[position].isupper() else new
        candidate = name[:position] + new + name[position + 1 :]
        if candidate not in taken:
            taken.add(candidate)
            return candidate
    raise RuntimeError(f"no free name near {name!r}")


def _statement(town: str, year: int, founder: str, river: str, event: str = "founded") -> str:
    return f"The town of {town} was {event} in {year} by {founder} on the banks of the {river} river."


@register_family
@dataclass(frozen=True)
class Confusers(Task):
    """Answer a fact about one town among near-identical statements about similarly named towns."""

    n_confusers: int = field(default=4, metadata={"help": "false statements about similarly named towns"})
    fact: Fact = field(default="random", metadata={"help": "random | year | founder | river"})
    answerable: bool = field(default=True, metadata={"help": "false: the true statement is left out"})
    confusing_facts: int = field(default=0, metadata={"help": "LV-Eval CFI: other events of the asked town"})
    scorer: Literal["match", "keyword_f1"] = field(
        default="match", metadata={"help": "match | keyword_f1 (LV-Eval's keyword-recall-gated F1)"}
    )
    max_new_tokens: int = field(default=24, metadata={"help": "generation budget"})

    family: ClassVar[str] = "confusers"
    summary: ClassVar[str] = "LV-Eval CFI/KPR: one true fact among near-duplicate facts about renamed entities"
    diffusion: ClassVar[Level] = "high"  # the true fact sits among near-duplicates about one-letter-different towns
    scope: ClassVar[Level] = "low"  # one fact

    def __post_init__(self) -> None:
        require(self.answerable or self.n_confusers >= 1, "confusers: answerable=false needs n_confusers >= 1")
        require(0 <= self.n_confusers <= 64, f"confusers: n_confusers must be in 0..64; got {self.n_confusers}")
        require(0 <= self.confusing_facts <= len(_EVENTS), f"confusers: confusing_facts must be in 0..{len(_EVENTS)}")
        require(self.max_new_tokens >= 1, f"confusers: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"confusers/{self.n_confusers}/{self.answerable}" + (
            f"/{self.confusing_facts}" * bool(self.confusing_facts)
        )
        probe = rng.stream(seed, name, "probe", self.fact, depth, index)
        filler_rng = rng.stream(seed, name, "filler", self.fact, context_length, depth, index)
        fact = self.fact if self.fact != "random" else probe.choice(_FACTS)
        taken: set[str] = set()
        town = words.pseudo_word(probe).capitalize()
        taken.add(town)
        count = self.n_confusers + 1 + self.confusing_facts
        years = probe.sample(range(1700, 1950), count)
        founders = words.unique(probe, words.person_name, count, set())
        rivers = words.unique(probe, lambda r: words.pseudo_word(r, 2).capitalize(), count, set())
        towns = [town] + [_similar(probe, town, taken) for _ in range(self.n_confusers)]
        towns += [town] * self.confusing_facts
        events = ["founded"] * (self.n_confusers + 1) + probe.sample(_EVENTS, self.confusing_facts)
        values = {"year": [str(y) for y in years], "founder": founders, "river": rivers}[fact]
        statements = [_statement(*row) for row in zip(towns, years, founders, rivers, events, strict=True)]
        depths = [depth] + [round(probe.random(), 4) for _ in range(count - 1)]
        if not self.answerable and self.n_confusers:
            depths[1] = depth  # the nearest confuser takes the left-out statement's place
        needles = [fitting.Needle(s, d) for s, d in zip(statements, depths, strict=True)]
        if not self.answerable:
            needles = needles[1:]
        asked = {"year": "In what year was", "founder": "Who founded", "river": "On which river was"}[fact]
        tail = {"year": "founded?", "founder": "?", "river": "founded?"}[fact]
        question = (
            f"\n\nAnswer the question based on the text above. If the text does not state the answer, say "
            f'"not stated".\nQuestion: {asked} the town of {town} {tail}'.replace(" ?", "?")
        )
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head="Read the following text.\n",
            question=question,
            answer_prefix="\nAnswer:",
            frame=frame,
            needles=needles,
            unit=prose_units(filler_rng),
            sep=" ",
            needle_sep=" ",
        )
        answers = [values[0]] if self.answerable else ["not stated"]
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(answers),
            max_new_tokens=self.max_new_tokens,
            stop=("\n",),
            fact=fact,
            town=town,
            confuser_values=values[1:],
            evidence=[values[0]] if self.answerable else [towns[1]],
            random_baseline=self._baseline(values) if self.answerable else 0.0,
        )

    def _baseline(self, values: list[str]) -> float:
        """The expected score of naming one candidate value uniformly at random (the true one is ``values[0]``)."""
        if self.scorer == "match":
            return round(1 / len(values), 6)
        return round(sum(metrics.keyword_gated_f1(v, values[0], values[0]) for v in values) / len(values), 6)

    def reference_answer(self, sample: Sample) -> str:
        return " " + sample.answers[0] if self.answerable else " The answer is not stated in the text."

    def score(self, sample: Sample, prediction: str) -> float:
        if not self.answerable:
            return float(scoring.refuses(prediction))
        if self.scorer == "keyword_f1":
            return metrics.keyword_gated_f1(prediction, sample.answers[0], sample.answers[0])
        wrong = any(scoring.contains(prediction, v) for v in sample.meta["confuser_values"])
        return float(scoring.contains(prediction, sample.answers[0]) and not wrong)
