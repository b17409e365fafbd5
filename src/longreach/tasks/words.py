"""Vendored word lists (see data/LICENSE.txt) and the values needles carry: numbers, word pairs, UUIDs."""

from __future__ import annotations

import functools
import importlib.resources
import random
import uuid


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
