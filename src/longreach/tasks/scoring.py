"""Token-boundary-aware answer matching: ``"7"`` is not found in ``"17"``, ``"blue-fox"`` not in ``"blue-foxes"``.

``match_all`` is RULER's string_match_all (recall of gold items, case-insensitive) with word boundaries;
``match_any`` is RULER's string_match_part (1 if any alias is present), also with boundaries.
"""

from __future__ import annotations

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
