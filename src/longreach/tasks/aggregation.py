"""Aggregation by frequency (Hsieh et al. 2024, RULER ``cwe`` and ``fwe``, ``scripts/data/synthetic/``).

``common`` (RULER cwe): a list of words in which ``n_top`` words appear ``freq_top`` times and every other
word at most ``freq_rest`` times; name the ``n_top`` most common. Below 4096 tokens RULER's small-context
rule applies (6 and 1 repetitions) unless ``small_context_rule=false``. ``frequent`` (RULER fwe): coded
6-letter words whose frequencies follow a Zipf law of exponent ``alpha``; the most frequent one is written
as dots (``....``) and the answer is the next three.

Ties are impossible by construction: common words outnumber every other word, and in the frequent mode the
realized counts of the whole prompt are checked (the stream is redrawn when a gap is not strict). Words
are made up (pronounceable syllables or random letters), so nothing can be remembered from training.
Deviations: the list is a space-separated stream (RULER numbers the cwe list) and carries no few-shot
example, so the exact-length fitter can add whole words. Length does not move the answer: the answer
words come from the probe stream; the filler stream supplies the rest. There is no depth.
Score: RULER's string_match_all (fraction of the answer words present). Random baseline: ``n`` words
picked at random from the distinct words of the context.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import fitting, rng, scoring, words
from longreach.tasks.base import Level, Sample, Task, register_family
from longreach.tasks.filler import drawn_units

_DOTS = "...."
_BLOCK = 128
_ATTEMPTS = 8


@register_family
@dataclass(frozen=True)
class Aggregation(Task):
    """Name the most common (cwe) or most frequent coded (fwe) words of a long list."""

    mode: Literal["common", "frequent"] = field(default="common", metadata={"help": "common (cwe) | frequent (fwe)"})
    n_top: int = field(default=10, metadata={"help": "words to name (common mode; frequent names 3)"})
    freq_top: int = field(default=30, metadata={"help": "repetitions of each common word"})
    freq_rest: int = field(default=3, metadata={"help": "repetitions of every other word"})
    small_context_rule: bool = field(default=True, metadata={"help": "RULER's 6/1 repetitions below 4096 tokens"})
    alpha: float = field(default=2.0, metadata={"help": "Zipf exponent (frequent mode)"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget (0: RULER's 120 cwe, 50 fwe)"})

    family: ClassVar[str] = "aggregation"
    summary: ClassVar[str] = "RULER cwe / fwe: name the most common or most frequent words of a long list"
    uses_depth: ClassVar[bool] = False
    diffusion: ClassVar[Level] = "high"  # no word is cued: the most frequent ones emerge only from counting
    scope: ClassVar[Level] = "high"  # every word of the list counts

    def __post_init__(self) -> None:
        require(1 <= self.n_top <= 50, f"aggregation: n_top must be in 1..50; got {self.n_top}")
        require(
            1 <= self.freq_rest < self.freq_top <= 200,
            f"aggregation: need 1 <= freq_rest < freq_top <= 200; got freq_rest={self.freq_rest}, "
            f"freq_top={self.freq_top}",
        )
        require(1.0 <= self.alpha <= 4.0, f"aggregation: alpha must be in [1, 4]; got {self.alpha}")
        require(self.max_new_tokens >= 0, f"aggregation: max_new_tokens must be >= 0; got {self.max_new_tokens}")

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        if self.mode == "common":
            return self._common(tokenizer, context_length, seed, index, frame)
        return self._frequent(tokenizer, context_length, seed, index, frame)

    def _common(self, tokenizer: Any, context_length: int, seed: int, index: int, frame: PromptFormat) -> Sample:
        name = f"aggregation/common/{self.n_top}"
        probe = rng.stream(seed, name, "probe", index)
        filler_rng = rng.stream(seed, name, "filler", context_length, index)
        taken: set[str] = set()
        top = words.unique(probe, words.pseudo_word, self.n_top, taken)
        small = self.small_context_rule and context_length < 4096
        freq_top, freq_rest = (6, 1) if small else (self.freq_top, self.freq_rest)
        needles = [fitting.Needle(w, round(probe.random(), 4)) for w in top for _ in range(freq_top)]

        def block() -> list[str]:
            fresh = words.unique(filler_rng, words.pseudo_word, _BLOCK // freq_rest, taken)
            items = [w for w in fresh for _ in range(freq_rest)]
            filler_rng.shuffle(items)
            return items

        fitted = fitting.fit_haystack(
            tokenizer,
            context_length,
            head=(
                "Below is a list of words. In these words, some appear more often than others. "
                "Memorize the ones that appear most often.\n"
            ),
            question=f"\nQuestion: What are the {self.n_top} most common words in the above list?",
            answer_prefix=f" Answer: The top {self.n_top} words that appear most often in the list are:",
            frame=frame,
            needles=needles,
            unit=_flatten(block),
            sep=" ",
            needle_sep=" ",
        )
        distinct = len(set(fitted.context.split()))
        return self._sample(fitted, top, 120, distinct, {"freq_top": freq_top, "freq_rest": freq_rest})

    def _frequent(self, tokenizer: Any, context_length: int, seed: int, index: int, frame: PromptFormat) -> Sample:
        name = f"aggregation/frequent/{self.alpha}"
        probe = rng.stream(seed, name, "probe", index)
        ranked = words.unique(probe, lambda r: words.letters(r, 6).lower(), 64, set())
        weights = [k**-self.alpha for k in range(1, len(ranked) + 1)]
        counts = [int(_BLOCK * w / sum(weights)) for w in weights]
        per_block = [ranked[k] if k else _DOTS for k, c in enumerate(counts) for _ in range(c)]
        answers = ranked[1:4]
        for attempt in range(_ATTEMPTS):
            filler_rng = rng.stream(seed, name, "filler", context_length, index, attempt)
            taken = set(ranked)

            def block(filler_rng: random.Random = filler_rng, taken: set[str] = taken) -> list[str]:
                rare = words.unique(filler_rng, lambda r: words.letters(r, 6).lower(), _BLOCK - len(per_block), taken)
                items = per_block + rare
                filler_rng.shuffle(items)
                return items

            fitted = fitting.fit_haystack(
                tokenizer,
                context_length,
                head=(
                    "Read the following coded text and track the frequency of each coded word. Find the three "
                    "most frequently appeared coded words.\n"
                ),
                question=(
                    "\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are the three "
                    "most frequently appeared words in the above coded text?"
                ),
                answer_prefix=(
                    " Answer: According to the coded text above, the three most frequently appeared words are:"
                ),
                frame=frame,
                needles=[],
                unit=_flatten(block),
                sep=" ",
                needle_sep=" ",
            )
            tally = Counter(w for w in fitted.context.split("\n", 1)[1].split() if w != _DOTS)
            ordered = tally.most_common(4)
            if {w for w, _ in ordered[:3]} == set(answers) and (len(ordered) < 4 or ordered[2][1] > ordered[3][1]):
                return self._sample(fitted, answers, 50, len(tally), {"alpha": self.alpha, "attempt": attempt})
        raise fitting.LengthFitError(
            f"aggregation: {context_length} tokens are too few for a frequent-words list with strict gaps; "
            "use a longer length"
        )

    def _sample(
        self, fitted: fitting.Fitted, answers: list[str], budget: int, distinct: int, extra: dict[str, Any]
    ) -> Sample:
        return Sample.from_fit(
            fitted,
            task=self.family,
            answers=tuple(answers),
            max_new_tokens=self.max_new_tokens or budget,
            stop=("\n\n",),
            **extra,
            mode=self.mode,
            random_baseline=round(min(1.0, len(answers) / max(1, distinct)), 6),
        )

    def score(self, sample: Sample, prediction: str) -> float:
        return scoring.match_all(sample.answers, prediction)


def _flatten(block: Any) -> Any:
    """Units from a generator of blocks of words: unit ``i`` is the i-th word of the concatenated blocks."""
    pending: list[str] = []

    def make() -> str:
        if not pending:
            pending.extend(reversed(block()))
        return pending.pop()

    return drawn_units(make)
