"""Long-form constrained generation (Wu et al. 2025, "Spinning the Golden Thread", arXiv 2409.02076; renamed
"LongGenBench: Benchmarking Long-Form Generation in Long Context LLMs" for ICLR'25, which is not the LongGenBench of
Liu et al. 2024: see :mod:`longreach.tasks.longgenbench`).

The model writes one long answer: ``num_entries`` entries (a diary of 2018 by week, or the floors of a
skyscraper), each opened by ``#*# Week k:`` / ``#*# Floor k:`` and at least ``words_per_entry`` words long,
ending with ``*** finished``. The instructions set checkable constraints: ``n_once`` single events (a diary
event is given as a 2018 date, which fixes its week), ``n_range`` events over a span of entries, and
``n_periodic`` events every p entries from a start. Every (entry, event) pair is one check; the prompt is
preceded by generated planning notes so its length is exact. The answer is prefilled with the first entry
header, as SGT does for its skyscraper and urban prompts.

Score: STIC-2, the fraction of all checks satisfied, judged by rule (the event's keyword appears in the
right entry; SGT uses an LLM judge). Only the model's own writing counts: an entry most of whose words lie in
runs of 4 words copied from the prompt (an echo of the instructions or the notes, verbatim or with a word
changed here and there) is an echo and meets no check, so echoing the prompt scores 0. ``meta`` also lists the
checks; the completion rate is the fraction of entries present. Random baseline: 0 (a fluent answer that
ignores the constraints satisfies none); note that an answer naming every event in every entry would satisfy
all checks, as under SGT's judge.
"""

from __future__ import annotations

import datetime
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import prose_units

Scenario = Literal["diary", "floors"]
_ECHO = 0.5  # an entry with more than this share of its words copied from the prompt is an echo


@register_family
@dataclass(frozen=True)
class GoldenThread(Task):
    """Write a long structured answer that satisfies every constraint."""

    scenario: Scenario = field(default="diary", metadata={"help": "diary (weeks of 2018) | floors (a skyscraper)"})
    num_entries: int = field(default=8, metadata={"help": "entries to write"})
    words_per_entry: int = field(default=30, metadata={"help": "minimum words per entry"})
    n_once: int = field(default=2, metadata={"help": "single-entry events"})
    n_range: int = field(default=1, metadata={"help": "events over a range of entries"})
    n_periodic: int = field(default=1, metadata={"help": "events every p entries"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget (0: 2 tokens a word + 16 per entry)"})

    family: ClassVar[str] = "golden_thread"
    summary: ClassVar[str] = "Spinning the Golden Thread: one long answer satisfying K checkable constraints"
    uses_depth: ClassVar[bool] = False
    diffusion: ClassVar[Level] = "low"  # the instructions stand together in one block before the answer
    scope: ClassVar[Level] = "high"  # every constraint shapes its entries of one long output

    def __post_init__(self) -> None:
        limit = 52 if self.scenario == "diary" else 300
        require(
            4 <= self.num_entries <= limit, f"golden_thread: num_entries must be in 4..{limit}; got {self.num_entries}"
        )
        require(
            5 <= self.words_per_entry <= 1000,
            f"golden_thread: words_per_entry must be in 5..1000; got {self.words_per_entry}",
        )
        for name in ("n_once", "n_range", "n_periodic"):
            require(
                0 <= getattr(self, name) <= 10, f"golden_thread: {name} must be in 0..10; got {getattr(self, name)}"
            )
        require(self.n_once + self.n_range + self.n_periodic >= 1, "golden_thread: give at least one constraint")
        require(self.max_new_tokens >= 0, f"golden_thread: max_new_tokens must be >= 0; got {self.max_new_tokens}")

    @property
    def label(self) -> str:
        return "Week" if self.scenario == "diary" else "Floor"

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        # The streams keep the family's former name, so its samples are those of stored runs under `longgen`.
        name = f"longgen/{self.scenario}/{self.num_entries}"
        probe = rng.stream(seed, name, "probe", index)
        filler_rng = rng.stream(seed, name, "filler", context_length, index)
        rules, checks = self._constraints(probe)
        n, label = self.num_entries, self.label
        thing = (
            "a diary of 2018, one entry per week"
            if self.scenario == "diary"
            else "a plan of a skyscraper, one entry per floor"
        )
        question = (
            f"\n\nWrite {thing}, for {label.lower()}s 1 to {n}. Start every entry with '#*# {label} k:' (k is the "
            f"{label.lower()} number) and write at least {self.words_per_entry} words in each. Follow these "
            "instructions:\n" + "\n".join(f"- {rule}" for rule in rules) + "\nWhen all entries are written, end with "
            "'*** finished'."
        )
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head="Planning notes from last year:\n",
            question=question,
            answer_prefix=f"\n*** started ***\n#*# {label} 1:",
            frame=frame,
            needles=[],
            unit=prose_units(filler_rng),
            sep=" ",
            needle_sep=" ",
        )
        budget = self.max_new_tokens or n * (2 * self.words_per_entry + 16)
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(f"{label} {entry}: {keyword}" for entry, keyword in checks),
            max_new_tokens=budget,
            stop=("*** finished",),
            checks=checks,
            random_baseline=0.0,
        )

    def _constraints(self, probe: random.Random) -> tuple[list[str], list[tuple[int, str]]]:
        """Instructions in words and the (entry, keyword) checks they imply."""
        n = self.num_entries
        count = self.n_once + self.n_range + self.n_periodic
        events = probe.sample(words.word_list("hobbies"), count)
        rules: list[str] = []
        checks: list[tuple[int, str]] = []
        for event in events[: self.n_once]:
            entry = probe.randint(1, n)
            if self.scenario == "diary":
                day = datetime.date(2018, 1, 1) + datetime.timedelta(days=7 * (entry - 1) + probe.randint(0, 6))
                rules.append(f"On {day.strftime('%B')} {day.day}, 2018, write about a day of {event}.")
            else:
                rules.append(f"Floor {entry} houses a {event} studio.")
            checks.append((entry, event))
        for event in events[self.n_once : self.n_once + self.n_range]:
            start = probe.randint(1, n - 2)
            end = min(n, start + probe.randint(1, 3))
            noun = "weeks" if self.scenario == "diary" else "floors"
            rules.append(f"In {noun} {start} to {end}, every entry mentions {event}.")
            checks.extend((entry, event) for entry in range(start, end + 1))
        for event in events[self.n_once + self.n_range :]:
            period = probe.randint(2, max(2, n // 3))
            start = probe.randint(1, period)
            noun = "weeks" if self.scenario == "diary" else "floors"
            rules.append(f"Every {period} {noun}, starting from {self.label.lower()} {start}, include {event}.")
            checks.extend((entry, event) for entry in range(start, n + 1, period))
        return rules, sorted(set(checks))

    def blocks(self, prediction: str) -> dict[int, str]:
        """Entry number -> its text; the prefilled first header is put back in front; first block per id wins."""
        text = f"#*# {self.label} 1:" + scoring.clean(prediction).split("*** finished")[0]
        found: dict[int, str] = {}
        for block in text.split("#*#")[1:]:
            match = re.match(rf"\s*{self.label}\s+(\d+)", block, flags=re.IGNORECASE)
            if match:
                found.setdefault(int(match.group(1)), block[match.end() :])
        return found

    def reference_answer(self, sample: Sample) -> str:
        needed: dict[int, list[str]] = {}
        for entry, keyword in sample.meta["checks"]:
            needed.setdefault(entry, []).append(keyword)
        parts = []
        for entry in range(1, self.num_entries + 1):
            events = " and ".join(needed.get(entry, ["a quiet routine"]))
            body = f" This entry is about {events}. " + "It was a full and busy time. " * (
                self.words_per_entry // 6 + 1
            )
            parts.append(body if entry == 1 else f"#*# {self.label} {entry}:{body}")
        return "\n".join(parts) + "\n*** finished"

    def score(self, sample: Sample, prediction: str) -> float:
        blocks = self.blocks(prediction)
        shares = scoring.copied_shares(list(blocks.values()), sample.prompt)
        own = {entry: text for (entry, text), share in zip(blocks.items(), shares, strict=True) if share <= _ECHO}
        checks = sample.meta["checks"]
        met = sum(scoring.contains(own.get(entry, ""), keyword) for entry, keyword in checks)
        return met / len(checks)
