"""Biographies (Yang et al. 2025, LongBioBench, ``data_utils/bios.py``, ``scripts/evaluator.py``).

A coherent haystack of generated biographies of fictional people (``Below is the bio of X. ... This is the
end of this bio.``); the target bios are bios too, so nothing is out of place. Questions (``op``):

- understanding: ``retrieve`` (one attribute of one person; ``style`` may paraphrase every bio or write it
  in the first person), ``multi_retrieve`` (the attribute of ``n_targets`` people, in order);
- reasoning over retrieved facts: ``age_diff`` (years between two birth years: arithmetic), ``compare``
  (who was born first: comparison), ``rank`` (``n_targets`` people ordered by birth date);
- trustworthiness: ``idk`` (the target's sentence is removed; the answer is "not stated"), ``cite`` (bios
  carry ids ``Bio [1234]``; answer and cite the supporting bio).

``distractor_density``: each distractor bio mentions the asked attribute with this probability (LongBioBench's
d). The requested depth places the first target bio; other targets sit at depths from the probe stream.
Scores follow LongBioBench: case-insensitive match for strings, the last integer for numbers, all-or-nothing
in-order matching for lists, a refusal for idk, and for cite the mean of answer and citation accuracy. One
tightening: an answer is the values it names, so a list of candidates is never better than one guess. The
values of the asked attribute named in the answer must be exactly the gold (one value; for multi_retrieve the
gold list in order), the people of rank are read in order of first mention, the bio ids cited must be exactly
the supporting one, and an idk answer must refuse without naming a value.
Deviations: bios carry random ids rather than positions (positions would change with length); there are no
two-shot demonstrations; ages are birth-year differences (no reference year is needed).
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

Op = Literal["retrieve", "multi_retrieve", "age_diff", "compare", "rank", "idk", "cite"]
Style = Literal["standard", "paraphrase", "pronoun"]
ATTRIBUTES = ("birthplace", "university", "major", "work_city", "hobby")
_MONTHS = ("January February March April May June July August September October November December").split()
_REFUSAL = "The answer is not explicitly stated"

_STANDARD = {
    "birthdate": "{name} was born on {value}.",
    "birthplace": "{name} was born in {value}.",
    "university": "{name} graduated from {value}.",
    "major": "{name} majored in {value}.",
    "work_city": "{name} works in {value}.",
    "hobby": "The hobby of {name} is {value}.",
}
_PARAPHRASE = {
    "birthdate": "The birthday of {name} falls on {value}.",
    "birthplace": "{name} came into the world in {value}.",
    "university": "{name} earned a degree at {value}.",
    "major": "The field {name} studied was {value}.",
    "work_city": "These days {name} earns a living in {value}.",
    "hobby": "In spare hours {name} enjoys {value}.",
}
_PRONOUN = {
    "birthdate": "I was born on {value}.",
    "birthplace": "My birthplace is {value}.",
    "university": "I graduated from {value}.",
    "major": "My major was {value}.",
    "work_city": "I work in {value}.",
    "hobby": "My hobby is {value}.",
}
_LISTS = {"birthplace": "cities", "work_city": "cities", "major": "majors", "hobby": "hobbies"}
_BIO_ID = re.compile(r"(?<![0-9])[0-9]{4}(?![0-9])")
_NOUN = {
    "birthplace": "birthplace",
    "university": "university",
    "major": "major",
    "work_city": "work city",
    "hobby": "hobby",
}
HEAD = (
    "Your task is to answer the question based on a long context, which consists of many bios. "
    "Output the answer only.\n\nContext:\n"
)


@dataclass(frozen=True)
class Person:
    name: str
    bio_id: str
    birthdate: tuple[int, int, int]
    attributes: dict[str, str]

    def value(self, attribute: str) -> str:
        if attribute == "birthdate":
            year, month, day = self.birthdate
            return f"{_MONTHS[month - 1]} {day}, {year}"
        return self.attributes[attribute]


def _person(r: random.Random, name: str) -> Person:
    return Person(
        name=name,
        bio_id=str(r.randint(1000, 9999)),
        birthdate=(r.randint(1950, 2001), r.randint(1, 12), r.randint(1, 28)),
        attributes={
            "birthplace": r.choice(words.word_list("cities")),
            "university": f"{r.choice(words.word_list('last_names'))} University",
            "major": r.choice(words.word_list("majors")),
            "work_city": r.choice(words.word_list("cities")),
            "hobby": r.choice(words.word_list("hobbies")),
        },
    )


@register_family
@dataclass(frozen=True)
class Biographies(Task):
    """Answer questions about people described in a haystack of biographies."""

    op: Op = field(
        default="retrieve", metadata={"help": "retrieve | multi_retrieve | age_diff | compare | rank | idk | cite"}
    )
    attribute: str = field(default="random", metadata={"help": f"asked attribute: random | {' | '.join(ATTRIBUTES)}"})
    n_targets: int = field(default=3, metadata={"help": "people asked about (multi_retrieve, rank)"})
    style: Style = field(default="standard", metadata={"help": "standard | paraphrase | pronoun"})
    distractor_density: float = field(default=1.0, metadata={"help": "chance a distractor bio states the attribute"})
    max_new_tokens: int = field(default=48, metadata={"help": "generation budget"})

    family: ClassVar[str] = "biographies"
    summary: ClassVar[str] = "LongBioBench: retrieval, reasoning, refusal and citation over a haystack of bios"
    diffusion: ClassVar[Level] = "high"  # facts sit in seamless look-alike bios, paraphrased or in the first person
    scope: ClassVar[Level] = "low"  # one to three people's facts

    def __post_init__(self) -> None:
        require(
            self.attribute == "random" or self.attribute in ATTRIBUTES,
            f"biographies: attribute must be random or one of {', '.join(ATTRIBUTES)}; got {self.attribute!r}",
        )
        require(2 <= self.n_targets <= 10, f"biographies: n_targets must be in 2..10; got {self.n_targets}")
        require(
            0.0 <= self.distractor_density <= 1.0,
            f"biographies: distractor_density must be in [0, 1]; got {self.distractor_density}",
        )
        require(self.max_new_tokens >= 1, f"biographies: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    @property
    def targets(self) -> int:
        return {"multi_retrieve": self.n_targets, "rank": self.n_targets, "age_diff": 2, "compare": 2}.get(self.op, 1)

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        name = f"biographies/{self.op}/{self.n_targets}/{self.style}"
        probe = rng.stream(seed, name, "probe", self.attribute, depth, index)
        filler_rng = rng.stream(seed, name, "filler", self.attribute, context_length, depth, index)
        attribute = self.attribute if self.attribute != "random" else probe.choice(ATTRIBUTES)
        if self.op in ("age_diff", "compare", "rank"):
            attribute = "birthdate"
        taken: set[str] = set()
        people = [_person(probe, n) for n in words.unique(probe, words.person_name, self.targets, taken)]
        if attribute == "birthdate":  # distinct birth years: no ties in comparisons
            years = probe.sample(range(1950, 2002), len(people))
            people = [
                Person(p.name, p.bio_id, (y, *p.birthdate[1:]), p.attributes)
                for p, y in zip(people, years, strict=True)
            ]
        question, answer_prefix, answers, evidence = self._question(people, attribute)
        depths = [depth] + [round(probe.random(), 4) for _ in people[1:]]
        needles = [
            fitting.Needle(self._bio(p, probe, attribute, drop=self.op == "idk"), d)
            for p, d in zip(people, depths, strict=True)
        ]

        def distractor() -> str:
            person = _person(filler_rng, words.unique(filler_rng, words.person_name, 1, taken)[0])
            keep = filler_rng.random() < self.distractor_density
            return self._bio(person, filler_rng, attribute, drop=not keep)

        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=HEAD,
            question=question,
            answer_prefix=answer_prefix,
            frame=frame,
            needles=needles,
            unit=drawn_units(distractor),
            sep="\n",
            needle_sep="\n",
        )
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(answers),
            max_new_tokens=self.max_new_tokens,
            stop=("\n",),
            op=self.op,
            attribute=attribute,
            people=[p.name for p in people],
            evidence=evidence,
            random_baseline=round(self._baseline(attribute, bios=fitted.filler_units + len(needles)), 6),
        )

    def _bio(self, person: Person, r: random.Random, asked: str, drop: bool) -> str:
        """One bio; ``drop`` leaves out the asked attribute (idk targets; sparse distractors)."""
        templates = {"standard": _STANDARD, "paraphrase": _PARAPHRASE, "pronoun": _PRONOUN}[self.style]
        attributes = ["birthdate", *ATTRIBUTES]
        r.shuffle(attributes)
        sentences = [
            templates[a].format(name=person.name, value=person.value(a))
            for a in attributes
            if not (drop and a == asked)
        ]
        label = f"Bio [{person.bio_id}]: " if self.op == "cite" else ""
        opening = (
            f"Below is the self-introduction of {person.name}."
            if self.style == "pronoun"
            else (f"Below is the bio of {person.name}.")
        )
        return f"{label}{opening} {' '.join(sentences)} This is the end of this bio."

    def _question(self, people: list[Person], attribute: str) -> tuple[str, str, list[str], list[str]]:
        """(question, answer prefix, gold answers, evidence found in the first target bio)."""
        first = people[0]
        noun = _NOUN.get(attribute, "")
        if self.op in ("retrieve", "cite"):
            value = first.value(attribute)
            prefix = f"\nAnswer: The {noun} of {first.name} is"
            if self.op == "retrieve":
                return f"\n\nQuestion: What is the {noun} of {first.name}?", prefix, [value], [value]
            return (
                f"\n\nQuestion: What is the {noun} of {first.name}? Give the answer, then cite the bio that states "
                "it as [id].",
                prefix,
                [value, first.bio_id],
                [value, first.bio_id],
            )
        if self.op == "multi_retrieve":
            names = ", ".join(p.name for p in people)
            values = [p.value(attribute) for p in people]
            question = f"\n\nQuestion: What are the {noun}s of {names}, in this order?"
            return question, "\nAnswer: In order, they are", values, [values[0]]
        if self.op == "idk":
            return (
                f"\n\nQuestion: What is the {noun} of {first.name}? If the context does not state it, answer "
                f'"{_REFUSAL}".',
                "\nAnswer:",
                ["not stated"],
                [first.name],
            )
        a, b = people[0], people[1]
        if self.op == "age_diff":
            gap = abs(a.birthdate[0] - b.birthdate[0])
            return (
                f"\n\nQuestion: How many years apart were {a.name} and {b.name} born (difference of birth years)?",
                "\nAnswer: The difference is",
                [str(gap)],
                [a.value("birthdate")],
            )
        if self.op == "compare":
            older = min(people[:2], key=lambda p: p.birthdate)
            return (
                f"\n\nQuestion: Who was born earlier, {a.name} or {b.name}?",
                "\nAnswer: The one born earlier is",
                [older.name],
                [a.value("birthdate")],
            )
        ordered = sorted(people, key=lambda p: p.birthdate)
        names = ", ".join(p.name for p in people)
        return (
            f"\n\nQuestion: Rank {names} from the earliest born to the latest born.",
            "\nAnswer: From earliest to latest:",
            [p.name for p in ordered],
            [a.value("birthdate")],
        )

    def _baseline(self, attribute: str, bios: int) -> float:
        """Expected score of a guess: a random value of the attribute (and, for cite, the id of a random bio of
        the context), a random order, year gap (0..51) or person."""
        options = len(candidates(attribute)) if attribute in (*_LISTS, "university") else 0
        if self.op == "retrieve":
            return 1 / options
        if self.op == "cite":
            return (1 / options + 1 / bios) / 2
        if self.op == "multi_retrieve":
            return (1 / options) ** self.n_targets
        if self.op == "age_diff":
            return 1 / 52
        if self.op == "compare":
            return 0.5
        if self.op == "rank":
            return 1 / math.factorial(self.n_targets)
        return 0.0

    def reference_answer(self, sample: Sample) -> str:
        if self.op == "idk":
            return f" {_REFUSAL}."
        if self.op == "cite":
            return f" {sample.answers[0]} [{sample.answers[1]}]"
        return super().reference_answer(sample)

    def score(self, sample: Sample, prediction: str) -> float:
        answers, people = sample.answers, sample.meta["people"]
        named = scoring.mentions(candidates(sample.meta["attribute"]), prediction)
        if self.op == "idk":
            return float(scoring.refuses(prediction) and not named)
        if self.op == "retrieve":
            return float(set(named) == {answers[0]})
        if self.op == "cite":
            cited = set(_BIO_ID.findall(scoring.clean(prediction)))
            return ((set(named) == {answers[0]}) + (cited == {answers[1]})) / 2
        if self.op == "multi_retrieve":
            return float(named == list(answers))
        if self.op == "age_diff":
            return float(scoring.last_integer(prediction) == int(answers[0]))
        if self.op == "compare":
            return float(scoring.found(people, prediction) == {answers[0]})
        order = list(dict.fromkeys(scoring.mentions(people, prediction)))  # rank: people by first mention
        return float(order == list(answers))


def candidates(attribute: str) -> tuple[str, ...]:
    """Every value the attribute can take (what a list of guesses would draw from); none for birthdate."""
    if attribute == "university":
        return tuple(f"{name} University" for name in words.word_list("last_names"))
    return words.word_list(_LISTS[attribute]) if attribute in _LISTS else ()
