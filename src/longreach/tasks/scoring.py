"""Token-boundary-aware answer matching: ``"7"`` is not found in ``"17"``, ``"blue-fox"`` not in ``"blue-foxes"``.

``match_all`` is RULER's string_match_all (recall of gold items, case-insensitive) with word boundaries;
``match_any`` is RULER's string_match_part (1 if any alias is present), also with boundaries.
"""

from __future__ import annotations

import functools
import re

_CONTROL = re.compile(r"[\x00-\x1f]")


def clean(prediction: str) -> str:
    """RULER's post-processing: strip, then control characters become newlines."""
    return _CONTROL.sub("\n", prediction.strip())


def contains(prediction: str, gold: str) -> bool:
    """True when ``gold`` occurs in ``prediction`` not glued to a letter or digit on either side."""
    pattern = r"(?<![0-9A-Za-z])" + re.escape(gold.strip()) + r"(?![0-9A-Za-z])"
    return re.search(pattern, clean(prediction), flags=re.IGNORECASE) is not None


def match_all(golds: tuple[str, ...] | list[str], prediction: str) -> float:
    """Fraction of gold items present in the prediction."""
    if not golds:
        return 0.0
    return sum(contains(prediction, gold) for gold in golds) / len(golds)


def match_any(golds: tuple[str, ...] | list[str], prediction: str) -> float:
    """1.0 when any gold alias is present, else 0.0."""
    return float(any(contains(prediction, gold) for gold in golds))


def found(candidates: tuple[str, ...] | list[str], prediction: str) -> set[str]:
    """The candidates (e.g. every entity name of a sample) that occur in the prediction."""
    return {c for c in candidates if contains(prediction, c)}


def mentions(candidates: tuple[str, ...] | list[str], prediction: str) -> list[str]:
    """The candidates named in the prediction, in order of appearance, repeats kept (case-insensitive, word
    boundaries; where two candidates overlap the longer one is named). Scorers that want one answer compare
    this list with the gold, so listing many candidates is never better than one guess."""
    if not candidates:
        return []
    pattern, canonical = _alternation(tuple(candidates))
    return [canonical[m.group().lower()] for m in pattern.finditer(clean(prediction))]


@functools.lru_cache(maxsize=64)
def _alternation(candidates: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, str]]:
    ordered = sorted({c.strip() for c in candidates}, key=len, reverse=True)
    body = "|".join(re.escape(c) for c in ordered)
    pattern = re.compile(r"(?<![0-9A-Za-z])(?:" + body + r")(?![0-9A-Za-z])", flags=re.IGNORECASE)
    return pattern, {c.lower(): c for c in ordered}


def f1(predicted: set[str], gold: set[str]) -> float:
    """Set F1: precision and recall of the predicted items against the gold ones (1.0 when both are empty)."""
    if not predicted and not gold:
        return 1.0
    hits = len(predicted & gold)
    if not hits:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(gold)
    return 2 * precision * recall / (precision + recall)


_INTEGER = re.compile(r"-?\d[\d,]*")


def last_integer(prediction: str) -> int | None:
    """The last integer in the text (thousands commas allowed), LongBioBench's and LongGenBench's rule."""
    numbers = [m.group().replace(",", "") for m in _INTEGER.finditer(clean(prediction))]
    numbers = [n for n in numbers if n.lstrip("-").isdigit()]
    return int(numbers[-1]) if numbers else None


def in_order(golds: tuple[str, ...] | list[str], prediction: str) -> float:
    """1.0 when every gold item occurs, in the given order (LongBioBench's sequential all-or-nothing rule)."""
    text, cursor = clean(prediction), 0
    for gold in golds:
        pattern = r"(?<![0-9A-Za-z])" + re.escape(gold.strip()) + r"(?![0-9A-Za-z])"
        match = re.compile(pattern, flags=re.IGNORECASE).search(text, cursor)
        if match is None:
            return 0.0
        cursor = match.end()
    return 1.0


_REFUSALS = ("not stated", "not mentioned", "not explicitly stated", "not given", "not provided", "unknown")


def refuses(prediction: str) -> bool:
    """True when the prediction says the answer is not in the text."""
    return any(contains(prediction, phrase) for phrase in _REFUSALS)


_WORD = re.compile(r"\w+")


def copied_shares(texts: list[str], source: str, n: int = 4) -> list[float]:
    """For each text, the share of its words that lie inside a run of ``n`` words also found in ``source``
    (case and punctuation ignored): how much of an answer is copied from the prompt. ``source`` is scanned
    once for all texts, and memory is bounded by the texts."""
    split = [[w.lower() for w in _WORD.findall(text)] for text in texts]
    grams = [[tuple(words[i : i + n]) for i in range(len(words) - n + 1)] for words in split]
    wanted = {gram for found in grams for gram in found}
    source_words = [w.lower() for w in _WORD.findall(source)] if wanted else []
    seen = {gram for gram in zip(*(source_words[k:] for k in range(n)), strict=False) if gram in wanted}
    shares = []
    for words, found in zip(split, grams, strict=True):
        copied = [False] * len(words)
        for i, gram in enumerate(found):
            if gram in seen:
                copied[i : i + n] = [True] * n
        shares.append(sum(copied) / len(words) if words else 0.0)
    return shares
