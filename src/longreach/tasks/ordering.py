"""Ordering (Wang et al. 2024, Ada-LEval TSort, ``ada_leval/dataset.py``): put shuffled segments in order.

One journey is cut into ``n_segments`` segments; segment k leaves city c_k and ends in city c_(k+1), and each
is padded with generated prose to an equal share of the length (Ada-LEval also grows TSort by segment size).
The segments are shown in shuffled order, labelled ``[1]`` .. ``[n]``; the order follows only from their
content (where each one starts and ends), never from ordinals. The answer is the labels in journey order.

Score: Ada-LEval's parser (a JSON list after ``Answer:``, else the one permutation that occurs as a
subsequence of the digits, else nothing) and exact match. Random baseline: 1 / n!. There is no depth.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import prose_units
from longreach.tasks.words import word_list


@register_family
@dataclass(frozen=True)
class Ordering(Task):
    """Reconstruct the order of shuffled journey segments."""

    n_segments: int = field(default=4, metadata={"help": "segments to order (Ada-LEval: 4, baseline 1/24)"})
    max_new_tokens: int = field(default=24, metadata={"help": "generation budget"})

    family: ClassVar[str] = "ordering"
    summary: ClassVar[str] = "Ada-LEval TSort: order shuffled segments whose order follows from their content"
    uses_depth: ClassVar[bool] = False
    diffusion: ClassVar[Level] = "high"  # the order follows only from the cities each segment starts and ends in
    scope: ClassVar[Level] = "high"  # every segment must be placed

    def __post_init__(self) -> None:
        require(2 <= self.n_segments <= 8, f"ordering: n_segments must be in 2..8; got {self.n_segments}")
        require(self.max_new_tokens >= 1, f"ordering: max_new_tokens must be >= 1; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        n = self.n_segments
        name = f"ordering/{n}"
        probe = rng.stream(seed, name, "probe", index)
        filler_rng = rng.stream(seed, name, "filler", context_length, index)
        cities = probe.sample(word_list("cities"), n + 1)
        shown = list(range(n))  # shown[j]: the true segment displayed with label j + 1
        while shown == sorted(shown):
            probe.shuffle(shown)
        needles = []
        for j, segment in enumerate(shown):
            start = f"\n[{j + 1}] The caravan set out from {cities[segment]} at first light."
            end = f"By nightfall the caravan had reached {cities[segment + 1]}."
            needles.append(fitting.Needle(start, round(j / n, 6), rank=2 * j))
            needles.append(fitting.Needle(end, round((j + 1) / n, 6), rank=2 * j + 1))
        answers = [str(shown.index(segment) + 1) for segment in range(n)]
        question = (
            f"\n\nThe segments above, labelled [1] to [{n}], are parts of one journey in shuffled order. Each segment "
            "starts in the city where the previous one ended. Give the labels in the order of the journey as a "
            "JSON list."
        )
        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head="Below are segments of a travel log.\n",
            question=question,
            answer_prefix="\nAnswer:",
            frame=frame,
            needles=needles,
            unit=prose_units(filler_rng),
            sep=" ",
            needle_sep=" ",
        )
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(answers),
            max_new_tokens=self.max_new_tokens,
            stop=("\n",),
            cities=cities,
            random_baseline=round(1 / math.factorial(n), 8),
        )

    def reference_answer(self, sample: Sample) -> str:
        return " [" + ", ".join(sample.answers) + "]"

    def score(self, sample: Sample, prediction: str) -> float:
        return float(parse_permutation(prediction, len(sample.answers)) == [int(a) for a in sample.answers])


def parse_permutation(prediction: str, n: int) -> list[int] | None:
    """Ada-LEval's TSort parser: JSON after ``Answer:``, else the unique permutation found as a subsequence."""
    text = scoring.clean(prediction)
    text = text.split("Answer:")[-1]
    match = re.search(r"\[[^\[\]]*\]", text)
    if match:
        try:
            value = json.loads(match.group())
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list) and sorted(v for v in value if isinstance(v, int)) == list(range(1, n + 1)):
            return value
    digits = [int(d) for d in re.findall(r"\d", text) if 1 <= int(d) <= n]
    found = [list(p) for p in itertools.permutations(range(1, n + 1)) if _subsequence(list(p), digits)]
    return found[0] if len(found) == 1 else None


def _subsequence(needle: list[int], haystack: list[int]) -> bool:
    position = 0
    for item in haystack:
        if position < len(needle) and item == needle[position]:
            position += 1
    return position == len(needle)
