"""Haystack filler: the repeated noise sentence, or generated prose that copies no text.

Filler is a stream of *units* (sentences); the length fitter takes as many as the target needs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

from longreach.tasks.words import word_list

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

_TEMPLATES = (
    "The {adj} {person} {verb} the {noun} {time}.",
    "A {adj} {noun} stood beside the {noun2}, and the {person} {verb} it {time}.",
    "{Time}, the {person} {verb} a {adj} {noun} near the old {noun2}.",
    "Nobody remembers who {verb} the {adj} {noun} by the {noun2}.",
    "The {noun} was {adj} and the {noun2} was {adj2}.",
    "Every {person} in the village {verb} the {noun} at least once.",
    "Somewhere past the {noun}, a {adj} {person} {verb} a {noun2} {time}.",
)


_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiou])")


def prose_sentence(rng: random.Random) -> str:
    """One grammatical, meaningless sentence from the vendored word lists."""
    bits = rng.getrandbits
    time = _choice(bits, word_list("times"))
    adjectives, nouns = word_list("adjectives"), word_list("nouns")
    sentence = _choice(bits, _TEMPLATES).format(
        adj=_choice(bits, adjectives),
        adj2=_choice(bits, adjectives),
        noun=_choice(bits, nouns),
        noun2=_choice(bits, nouns),
        person=_choice(bits, word_list("people")),
        verb=_choice(bits, word_list("verbs")),
        time=time,
        Time=time[0].upper() + time[1:],
    )
    if "a " not in sentence and "A " not in sentence:  # nothing for the article rule to change
        return sentence
    return _ARTICLE.sub(r"\1n ", sentence)


def _choice(getrandbits: Callable[[int], int], seq: Sequence[str]) -> str:
    """``random.Random.choice(seq)`` drawing the very same bits (rejection sampling on ``len(seq).bit_length()``
    bits, as CPython does), inlined because a 1M-token haystack draws about 600,000 words."""
    n = len(seq)
    k = n.bit_length()
    r = getrandbits(k)
    while r >= n:
        r = getrandbits(k)
    return seq[r]


def noise_units(rng: random.Random) -> Callable[[int], str]:
    """The noise haystack: every unit is the same sentence group."""
    return lambda i: NOISE


def prose_units(rng: random.Random) -> Callable[[int], str]:
    """Generated prose; unit ``i`` is fixed once drawn, so re-rendering is consistent."""
    drawn: list[str] = []

    def unit(i: int) -> str:
        while len(drawn) <= i:
            drawn.append(prose_sentence(rng))
        return drawn[i]

    return unit


def drawn_units(make: Callable[[], str]) -> Callable[[int], str]:
    """Units drawn one after another by ``make`` (e.g. from a seeded RNG), memoised so unit ``i`` is stable."""
    drawn: list[str] = []

    def unit(i: int) -> str:
        while len(drawn) <= i:
            drawn.append(make())
        return drawn[i]

    return unit
