"""Exact-length haystacks: fill a prompt with filler units around needles until it is exactly N tokens.

The whole prompt (head + haystack + question, with the tokenizer's special tokens) is counted in the
model's own tokenizer, as the backend will encode it. The number of whole filler units is found by a
galloping search from an additive estimate (a few full tokenizations), then the remaining deficit is
filled with a prefix of the next unit, verified by re-tokenizing; a search that cannot hit the target
exactly raises :class:`LengthFitError`.

Depth ``d`` places a needle before whole filler unit ``round(d * units)``: 0 is the start of the
haystack, 1 its end (just before the question). The realized depth is measured in tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from longreach import tokens
from longreach.errors import LongreachError


class LengthFitError(LongreachError):
    """The requested length cannot be produced (too short for the fixed part, or no exact fit found)."""


@dataclass(frozen=True)
class Needle:
    text: str
    depth: float


@dataclass(frozen=True)
class Fitted:
    """A fitted prompt. Offsets are token indices in ``encode(context + question)``."""

    context: str
    question: str
    realized_tokens: int
    filler_units: int
    needle_token_offsets: list[tuple[int, int]]
    realized_depths: list[float]


@dataclass(frozen=True)
class _Layout:
    head: str
    question: str
    needles: list[Needle]
    unit: Callable[[int], str]
    sep: str
    needle_sep: str

    def render(self, units: int, tail: str = "") -> tuple[str, list[tuple[int, int]]]:
        """The context with ``units`` whole filler units (+ a partial ``tail``) and the needles' char spans.

        Needles sit before whole unit ``round(depth * units)``; the tail directly follows the last whole
        unit, so adding it changes no needle's neighbours.
        """
        slots: list[list[int]] = [[] for _ in range(units + 1)]
        for k, needle in enumerate(self.needles):
            slots[round(needle.depth * units)].append(k)
        sequence: list[tuple[str, str, int]] = []
        for slot in range(units + 1):
            if slot == units and tail:
                sequence.append(("filler", tail, -1))
            sequence.extend(("needle", self.needles[k].text, k) for k in slots[slot])
            if slot < units:
                sequence.append(("filler", self.unit(slot), -1))
        parts: list[str] = [self.head]
        spans: list[tuple[int, int]] = [(0, 0)] * len(self.needles)
        offset = len(self.head)
        for position, (kind, text, k) in enumerate(sequence):
            if position:
                glue = self.sep if kind == sequence[position - 1][0] == "filler" else self.needle_sep
                parts.append(glue)
                offset += len(glue)
            if kind == "needle":
                spans[k] = (offset, offset + len(text))
            parts.append(text)
            offset += len(text)
        return "".join(parts), spans


def fit_haystack(
    tokenizer: Any,
    target: int,
    *,
    head: str,
    question: str,
    needles: list[Needle],
    unit: Callable[[int], str],
    sep: str = " ",
    needle_sep: str = " ",
) -> Fitted:
    """Build ``head + haystack`` so that ``encode(context + question)`` has exactly ``target`` tokens."""
    layout = _Layout(head, question, needles, unit, sep, needle_sep)

    def length(units: int, tail: str = "") -> int:
        return tokens.count(tokenizer, layout.render(units, tail)[0] + question)

    fixed = length(0)
    if fixed > target:
        raise LengthFitError(f"context_length {target} is smaller than the prompt's fixed part ({fixed} tokens)")
    units = _largest_fitting(length, target, _estimate_units(tokenizer, unit, sep, target - fixed))
    units, tail = _fill_deficit(tokenizer, length, units, target, unit, sep)
    context, spans = layout.render(units, tail)
    return _measure(tokenizer, context, question, head, spans, units)


def _estimate_units(tokenizer: Any, unit: Callable[[int], str], sep: str, budget: int) -> int:
    """How many units fit in ``budget`` tokens if token counts were additive."""
    used, n, cache = 0, 0, {}
    while True:
        text = unit(n)
        if text not in cache:
            cache[text] = len(tokenizer(sep + text, add_special_tokens=False)["input_ids"])
        if used + cache[text] > budget:
            return n
        used += cache[text]
        n += 1


def _largest_fitting(length: Callable[[int], int], target: int, guess: int) -> int:
    """Largest n with length(n) <= target: gallop from ``guess`` to bracket it, then bisect."""
    lo, hi = (guess, None) if length(guess) <= target else (None, guess)
    step = 1
    while lo is None:
        candidate = max(0, hi - step)
        if length(candidate) <= target:
            lo = candidate
        else:
            hi, step = candidate, step * 2
    while hi is None:
        candidate = lo + step
        if length(candidate) > target:
            hi = candidate
        else:
            lo, step = candidate, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if length(mid) <= target else (lo, mid)
    return lo


def _fill_deficit(
    tokenizer: Any, length: Callable[..., int], units: int, target: int, unit: Callable[[int], str], sep: str
) -> tuple[int, str]:
    """(whole units, partial tail) that make the prompt exactly ``target`` tokens.

    Tries prefixes of the next few units, nearest the deficit first, and short common words; when a
    tokenizer's merges skip the exact count, it steps back a unit or two and tries again.
    """
    if length(units) == target:
        return units, ""
    for whole in range(units, max(-1, units - 3), -1):
        deficit = target - length(whole)
        sources = [unit(i) for i in range(whole, whole + 4)] + [_COMMON_WORDS]
        for text in dict.fromkeys(sources):
            for tail in _tail_candidates(tokenizer, text, sep, deficit)[:_TRIES_PER_SOURCE]:
                if length(whole, tail) == target:
                    return whole, tail
    raise LengthFitError(
        f"could not fit the prompt to exactly {target} tokens with this tokenizer; try a neighbouring length"
    )


_COMMON_WORDS = "a the and so on it is as we go to the end of the day"
_TRIES_PER_SOURCE = 8


def _tail_candidates(tokenizer: Any, text: str, sep: str, deficit: int) -> list[str]:
    """Prefixes of ``text`` ordered by how close their token count is to ``deficit``."""
    ids = tokenizer(sep + text, add_special_tokens=False)["input_ids"]
    candidates = [(abs(j - deficit), tokenizer.decode(ids[:j]).lstrip()) for j in range(1, len(ids))]
    words = text.split(" ")
    for w in range(1, len(words)):
        prefix = " ".join(words[:w])
        size = len(tokenizer(sep + prefix, add_special_tokens=False)["input_ids"])
        candidates.append((abs(size - deficit), prefix))
    ordered = [c for _, c in sorted(candidates, key=lambda pair: pair[0])]
    return [c for c in dict.fromkeys(ordered) if c]


def _measure(
    tokenizer: Any, context: str, question: str, head: str, spans: list[tuple[int, int]], units: int
) -> Fitted:
    prompt = context + question
    total = tokens.count(tokenizer, prompt)
    chars = [len(head), len(context)] + [c for start, end in spans for c in (start, end - 1)]
    hay_start, hay_end, *needle_tokens = tokens.token_indices_of_chars(tokenizer, prompt, chars)
    offsets, depths = [], []
    for first, last_char_token in zip(needle_tokens[::2], needle_tokens[1::2], strict=True):
        last = last_char_token + 1
        offsets.append((first, last))
        room = max(1, (hay_end - hay_start) - (last - first))
        depths.append(round(min(1.0, max(0.0, (first - hay_start) / room)), 4))
    return Fitted(context, question, total, units, offsets, depths)
