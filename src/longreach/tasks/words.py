"""Vendored word lists (see data/LICENSE.txt) and the values needles carry: numbers, word pairs, UUIDs."""

from __future__ import annotations

import functools
import importlib.resources
import random
import uuid
from collections.abc import Callable


@functools.cache
def word_list(name: str) -> tuple[str, ...]:
    """One of the vendored lists: adjectives, nouns, verbs, people, times (sorted, unique)."""
    text = importlib.resources.files("longreach.tasks").joinpath(f"data/{name}.txt").read_text()
    return tuple(sorted({line.strip() for line in text.splitlines() if line.strip()}))


def number(rng: random.Random, digits: int = 7) -> str:
    """A ``digits``-digit decimal number with no leading zero."""
    return str(rng.randint(10 ** (digits - 1), 10**digits - 1))


def word_pair(rng: random.Random) -> str:
    """An ``adjective-noun`` key such as ``quiet-lantern`` (RULER's word keys, from our own lists)."""
    return f"{rng.choice(word_list('adjectives'))}-{rng.choice(word_list('nouns'))}"


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


VALUE_MAKERS = {"numbers": number, "words": word_pair, "uuids": uuid4}


def unique_values(rng: random.Random, kind: str, count: int, taken: set[str]) -> list[str]:
    """``count`` fresh values of ``kind`` (numbers, words, uuids) not in ``taken``; adds them to ``taken``."""
    make = VALUE_MAKERS[kind]
    values: list[str] = []
    for _ in range(count * 1000):
        if len(values) == count:
            break
        value = make(rng)
        if value not in taken:
            taken.add(value)
            values.append(value)
    if len(values) < count:
        raise RuntimeError(f"could not draw {count} distinct {kind}")
    return values


_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "l", "m", "n", "p", "pr", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")


def pseudo_word(rng: random.Random, syllables: int = 3) -> str:
    """A pronounceable made-up word such as ``dravomi`` (no meaning, so nothing to memorise)."""
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))


def letters(rng: random.Random, count: int) -> str:
    """``count`` random upper-case letters (RULER's variable names)."""
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(count))


def unique(rng: random.Random, make: Callable[[random.Random], str], count: int, taken: set[str]) -> list[str]:
    """``count`` fresh values from ``make`` not in ``taken``; adds them to ``taken``."""
    values: list[str] = []
    for _ in range(count * 1000 + 100):
        if len(values) == count:
            return values
        value = make(rng)
        if value not in taken:
            taken.add(value)
            values.append(value)
    raise RuntimeError(f"could not draw {count} distinct values")


def person_name(rng: random.Random) -> str:
    """A fictional full name from the vendored first and last name lists (first middle-initial last)."""
    first = rng.choice(word_list("first_names"))
    return f"{first} {rng.choice('ABCDEFGHJKLMNPRSTVW')}. {rng.choice(word_list('last_names'))}"
