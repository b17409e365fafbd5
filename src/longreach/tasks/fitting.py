"""Exact-length haystacks: fill a prompt with filler units around needles until it is exactly N tokens.

The whole prompt as the backend sends it is counted in the model's own tokenizer, with its special tokens:
``frame.render(head + haystack, question, answer_prefix)``, i.e. the chat template's text around the user
turn too when the frame is ``chat`` (:mod:`longreach.prompts`). Internally the template's prefix is part of
the head and the question, template suffix and answer prefix form one tail; the returned parts are unformatted.

Fast path (what makes a 1M-token instance cheap): token counts are estimated *additively* from cached
counts of whitespace-delimited pieces (``" grass"``, ``" green."``), tokenized in batches; the number of
whole units and a partial ``tail`` (a prefix of the next unit, topped up with words that are single tokens
in this tokenizer) are chosen from those estimates, and the prompt is tokenized in full once to verify.
Tokenizers are not perfectly additive, so when the verified count is off, the end of the haystack is
corrected by tokenizing only a short window around it (its effect is local) and verified again (long
prompts: by re-encoding only the last of the chunks the first verification encoded in parallel).
If that does not converge, a slow search with full tokenizations (galloping, then bisection) finishes
the job; a search that cannot hit the target exactly raises :class:`LengthFitError`.

Depth ``d`` places a needle before whole filler unit ``round(d * units)``: 0 is the start of the
haystack, 1 its end (just before the question). The realized depth is measured in tokens: the share of
the filler's tokens that precede the needle (the other needles are left out of both counts).
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from longreach import tokens
from longreach.errors import LongreachError
from longreach.prompts import RAW, PromptFormat


class LengthFitError(LongreachError):
    """The requested length cannot be produced (too short for the fixed part, or no exact fit found)."""


@dataclass(frozen=True)
class Needle:
    """Text placed at ``depth``; needles that share a slot appear by ``rank``, then in list order."""

    text: str
    depth: float
    rank: int = 0


@dataclass(frozen=True)
class Fitted:
    """A fitted prompt: its unformatted ``context`` (head + haystack), ``question`` and ``answer_prefix``, and
    the ``frame`` that renders them. Offsets are token indices in ``encode(prompt)``."""

    context: str
    question: str
    realized_tokens: int
    filler_units: int
    needle_token_offsets: list[tuple[int, int]]
    realized_depths: list[float]
    full_tokenizations: int = 0
    answer_prefix: str = ""
    frame: PromptFormat = RAW

    @property
    def prompt(self) -> str:
        """The whole text the backend sends, ``realized_tokens`` long."""
        return self.frame.render(self.context, self.question, self.answer_prefix)

    def meta(self) -> dict[str, Any]:
        """The length and placement facts every generated sample records."""
        return {
            "realized_tokens": self.realized_tokens,
            "filler_units": self.filler_units,
            "needle_token_offsets": self.needle_token_offsets,
            "realized_depth": self.realized_depths[0] if self.realized_depths else None,
            "needle_depths": self.realized_depths,
            "fit_full_tokenizations": self.full_tokenizations,
        }


@dataclass(frozen=True)
class _Layout:
    head: str
    question: str
    needles: list[Needle]
    unit: Callable[[int], str]
    sep: str
    needle_sep: str
    frozen: tuple[int, ...] | None = None  # needle slots fixed once (fast path), else round(depth * units)

    def slot(self, k: int, units: int) -> int:
        depth = self.needles[k].depth
        if self.frozen is None or depth >= 1.0:
            return round(depth * units)
        return min(self.frozen[k], units)

    def render(self, units: int, tail: str = "", start: int = 0) -> tuple[str, list[tuple[int, int]]]:
        """The context with ``units`` whole filler units (+ a partial ``tail``) and the needles' char spans.

        Needles sit before whole unit ``slot``; the tail directly follows the last whole unit, so adding it
        changes no needle's neighbours. With ``start`` > 0 only the text from slot ``start`` on is
        returned (with its leading glue; the head is left out) and the spans are not meaningful.
        Runs of filler units between needles are joined in one call (this is what makes 1M tokens cheap).
        """
        by_slot: dict[int, list[int]] = {}
        for k in sorted(range(len(self.needles)), key=lambda k: self.needles[k].rank):
            by_slot.setdefault(self.slot(k, units), []).append(k)
        elements: list[tuple[str, str, int]] = [("filler", "", -1)] if start else []
        cursor = start
        for slot in sorted({s for s in by_slot if s >= start} | {units}):
            if slot > cursor:
                elements.append(("filler", self.sep.join(self.unit(i) for i in range(cursor, slot)), -1))
            if slot == units and tail:
                elements.append(("filler", tail, -1))
            elements.extend(("needle", self.needles[k].text, k) for k in by_slot.get(slot, []))
            cursor = max(cursor, slot)
        parts: list[str] = [] if start else [self.head]
        spans: list[tuple[int, int]] = [(0, 0)] * len(self.needles)
        offset = 0 if start else len(self.head)
        first = 1 if start else 0
        for position in range(first, len(elements)):
            kind, text, k = elements[position]
            if position:
                glue = self.sep if kind == elements[position - 1][0] == "filler" else self.needle_sep
                parts.append(glue)
                offset += len(glue)
            if kind == "needle":
                spans[k] = (offset, offset + len(text))
            parts.append(text)
            offset += len(text)
        return "".join(parts), spans


_PIECE = re.compile(r"\s*\S+|\s+$")
_PAD_WORDS = ("and", "so", "on", "it", "is", "as", "we", "go", "to", "the", "end", "of", "a", "day")
_MAX_PAD = 6
_LOCAL_ROUNDS = 3


class _PieceCounter:
    """Additive token-count estimates from cached counts of whitespace-delimited pieces."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.pieces: dict[str, int] = {}
        self.texts: dict[str, int] = {}
        self._pads: list[str] | None = None

    def counts(self, texts: list[str]) -> list[int]:
        if len(self.texts) > 100_000:
            self.texts.clear()
        new = {text: _PIECE.findall(text) for text in texts if text not in self.texts}
        missing = {p for found in new.values() for p in found} - self.pieces.keys()
        if missing:
            ordered = sorted(missing)
            self.pieces.update(zip(ordered, tokens.piece_lengths(self.tokenizer, ordered), strict=True))
        cost = self.pieces.__getitem__
        self.texts.update((text, sum(map(cost, found))) for text, found in new.items())
        return [self.texts[text] for text in texts]

    def count(self, text: str) -> int:
        return self.counts([text])[0]

    def pads(self) -> list[str]:
        """Short words that are one token each (with a leading space) in this tokenizer."""
        if self._pads is None:
            costs = self.counts([" " + w for w in _PAD_WORDS])
            self._pads = [w for w, c in zip(_PAD_WORDS, costs, strict=True) if c == 1]
        return self._pads


class _UnitCosts:
    """Estimated tokens of ``sep + unit(i)``, extended lazily in batches; ``cum[n]`` = cost of n units."""

    _BATCH = 512

    def __init__(self, counter: _PieceCounter, unit: Callable[[int], str], sep: str) -> None:
        self.counter, self.unit, self.sep = counter, unit, sep
        self.cum = [0]

    def _extend(self) -> None:
        start = len(self.cum) - 1
        texts = [self.sep + self.unit(i) for i in range(start, start + self._BATCH)]
        for cost in self.counter.counts(texts):
            self.cum.append(self.cum[-1] + max(cost, 1))

    def total(self, n: int) -> int:
        while len(self.cum) <= n:
            self._extend()
        return self.cum[n]

    def largest_within(self, budget: int) -> int:
        """Largest n whose estimated cost is <= budget."""
        while self.cum[-1] <= budget:
            self._extend()
        return bisect.bisect_right(self.cum, budget) - 1


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
    answer_prefix: str = "",
    frame: PromptFormat = RAW,
) -> Fitted:
    """Build ``head + haystack`` so that ``encode(frame.render(head + haystack, question, answer_prefix))`` has
    exactly ``target`` tokens. The result's ``context`` is ``head + haystack`` (without the frame's prefix)."""
    layout = _Layout(frame.head(head), frame.tail(question, answer_prefix), needles, unit, sep, needle_sep)
    fitted = _fit(tokenizer, layout, target)
    return dataclasses.replace(
        fitted,
        context=fitted.context[len(frame.prefix) :],
        question=question,
        answer_prefix=answer_prefix,
        frame=frame,
    )


def _fit(tokenizer: Any, layout: _Layout, target: int) -> Fitted:
    """The fitted layout; its ``context`` is the formatted head + haystack and its ``question`` the whole tail."""
    question = layout.question
    fixed = tokens.count(tokenizer, layout.render(0)[0] + question)
    if fixed > target:
        raise LengthFitError(f"context_length {target} is smaller than the prompt's fixed part ({fixed} tokens)")
    fast = _fit_fast(tokenizer, layout, target, fixed)
    if fast is not None:
        return fast
    units = _largest_fitting(lambda n: _length(tokenizer, layout, n), target, 0)
    units, tail = _fill_deficit(tokenizer, layout, units, target)
    context, spans = layout.render(units, tail)
    return _measure(tokenizer, context, question, layout.head, spans, units, None)


def _length(tokenizer: Any, layout: _Layout, units: int, tail: str = "") -> int:
    return tokens.count(tokenizer, layout.render(units, tail)[0] + layout.question)


def _fit_fast(tokenizer: Any, layout: _Layout, target: int, fixed: int) -> Fitted | None:
    """Estimate, verify in full, correct locally; None when the estimates cannot be made exact."""
    counter = _PieceCounter(tokenizer)
    costs = _UnitCosts(counter, layout.unit, layout.sep)
    # The glue around needles (``needle_sep``) is not in the unit costs: measure it once on a few units.
    probe = 4
    glue = _length(tokenizer, layout, probe) - fixed - costs.total(probe)
    fixed += glue
    units = costs.largest_within(target - fixed)
    frozen = tuple(round(n.depth * units) for n in layout.needles)
    layout = dataclasses.replace(layout, frozen=frozen)
    tail = None
    for whole in range(units, max(-1, units - 3), -1):  # a tail costs its glue too: step back if it cannot fit
        tail = _estimated_tail(counter, layout, whole, target - fixed - costs.total(whole))
        if tail is not None:
            units = whole
            break
    if tail is None:
        return None
    full, encoding = 0, None
    for _ in range(_LOCAL_ROUNDS):
        context, spans = layout.render(units, tail)
        encoding = tokens.encode_with_offsets(tokenizer, context + layout.question, previous=encoding)
        full += encoding.reused_chars == 0  # a corrected end re-encodes only the last chunk
        if len(encoding.ids) == target:
            return _measure(tokenizer, context, layout.question, layout.head, spans, units, encoding, full)
        fixed_up = _local_fix(tokenizer, counter, costs, layout, units, tail, target - len(encoding.ids))
        if fixed_up is None:
            return None
        units, tail = fixed_up
    return None


def _tail_texts(counter: _PieceCounter, layout: _Layout, units: int, deficit: int, max_pad: int = 8) -> list[str]:
    """Tails whose estimated cost (with their glue) is ``deficit``: word prefixes of the next unit, topped up
    with pad words, fewest pad words first; the empty tail when the deficit is zero."""
    if deficit <= 0:
        return [""] if deficit == 0 else []
    pads = counter.pads()
    words = layout.unit(units).split(" ")
    prefixes = [""] + [" ".join(words[:w]) for w in range(1, len(words))]
    candidates: list[tuple[int, str]] = []
    for count in range(0, (max_pad if pads else 0) + 1):
        texts = [" ".join(filter(None, [p, *_pad(pads, count)])) for p in prefixes]
        texts = [t for t in texts if t]
        for text, cost in zip(texts, counter.counts([layout.sep + t for t in texts]), strict=True):
            if cost == deficit:
                candidates.append((count, text))
        if len(candidates) >= 4:
            break
    return list(dict.fromkeys(text for _, text in candidates))


def _pad(pads: list[str], count: int) -> list[str]:
    return [pads[i % len(pads)] for i in range(count)]


def _estimated_tail(counter: _PieceCounter, layout: _Layout, units: int, deficit: int) -> str | None:
    found = _tail_texts(counter, layout, units, deficit, max_pad=64)
    return found[0] if found else None


def _local_fix(
    tokenizer: Any,
    counter: _PieceCounter,
    costs: _UnitCosts,
    layout: _Layout,
    units: int,
    tail: str,
    delta: int,
) -> tuple[int, str] | None:
    """(units, tail) that change the prompt's length by ``delta``, judged on a window at the haystack's end.

    The window starts a few units before the end (far enough back to remove ``-delta`` tokens) and runs
    to the end of the prompt; only its token count is measured, so this costs milliseconds at any length.
    """
    start = units
    while start > 0 and (costs.total(units) - costs.total(start) < max(0, -delta) + 8 or units - start < 2):
        start -= 1

    def window(n: int, t: str) -> int:
        text = layout.render(n, t, start=start)[0] + layout.question
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    want = window(units, tail) + delta
    n = start
    while window(n + 1, "") <= want:
        n += 1
        if n - start > 10_000:
            return None
    for whole in range(n, max(start, n - 3) - 1, -1):
        deficit = want - window(whole, "")
        if deficit == 0:
            return whole, ""
        tails = _tail_texts(counter, layout, whole, deficit, max_pad=64)[:6]
        tails += _decoded_prefixes(tokenizer, layout.sep, layout.unit(whole), deficit)[:6]
        for tail_text in tails:
            if window(whole, tail_text) == want:
                return whole, tail_text
    return None


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


def _fill_deficit(tokenizer: Any, layout: _Layout, units: int, target: int) -> tuple[int, str]:
    """(whole units, partial tail) that make the prompt exactly ``target`` tokens (full tokenizations).

    Tries prefixes of the next few units, nearest the deficit first, and short common words; when a
    tokenizer's merges skip the exact count, it steps back a unit or two and tries again.
    """
    if _length(tokenizer, layout, units) == target:
        return units, ""
    for whole in range(units, max(-1, units - 3), -1):
        deficit = target - _length(tokenizer, layout, whole)
        sources = [layout.unit(i) for i in range(whole, whole + 4)] + [_COMMON_WORDS]
        for text in dict.fromkeys(sources):
            for tail in _decoded_prefixes(tokenizer, layout.sep, text, deficit)[:_TRIES_PER_SOURCE]:
                if _length(tokenizer, layout, whole, tail) == target:
                    return whole, tail
    raise LengthFitError(
        f"could not fit the prompt to exactly {target} tokens with this tokenizer; try a neighbouring length"
    )


_COMMON_WORDS = "a the and so on it is as we go to the end of the day"
_TRIES_PER_SOURCE = 8


def _decoded_prefixes(tokenizer: Any, sep: str, text: str, deficit: int) -> list[str]:
    """Prefixes of ``text`` (token and word prefixes) ordered by how close their token count is to ``deficit``."""
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
    tokenizer: Any,
    context: str,
    question: str,
    head: str,
    spans: list[tuple[int, int]],
    units: int,
    encoding: tokens.Encoding | None,
    full_tokenizations: int = 0,
) -> Fitted:
    prompt = context + question
    if encoding is None:
        encoding = tokens.encode_with_offsets(tokenizer, prompt)
        full_tokenizations += 1
    chars = [len(head), len(context)] + [c for start, end in spans for c in (start, end - 1)]
    hay_start, hay_end, *needle_tokens = encoding.token_indices_of_chars(chars)
    offsets = [(first, last + 1) for first, last in zip(needle_tokens[::2], needle_tokens[1::2], strict=True)]
    # Realized depth: the share of the filler's tokens that come before the needle (other needles left out).
    filler = max(1, (hay_end - hay_start) - sum(last - first for first, last in offsets))
    depths = []
    for first, _ in offsets:
        before = (first - hay_start) - sum(e - b for b, e in offsets if e <= first)
        depths.append(round(min(1.0, max(0.0, before / filler)), 4))
    return Fitted(context, question, len(encoding.ids), units, offsets, depths, full_tokenizations)
