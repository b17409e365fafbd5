"""How text becomes the token ids a model sees. Tasks count with these functions and the backend encodes
with them, so a prompt generated at N tokens is exactly N tokens when the model reads it."""

from __future__ import annotations

from typing import Any


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as the backend sends it (with the tokenizer's own special tokens, e.g. BOS)."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def count(tokenizer: Any, text: str) -> int:
    return len(encode(tokenizer, text))


def token_indices_of_chars(tokenizer: Any, text: str, char_indices: list[int]) -> list[int]:
    """For each character index of ``text``, the index of the first token that ends after it."""
    if not getattr(tokenizer, "is_fast", False):
        return [count(tokenizer, text[:c]) for c in char_indices]
    offsets = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)["offset_mapping"]
    ends = [end if end > start else -1 for start, end in offsets]
    found = []
    for char_index in char_indices:
        found.append(next((i for i, end in enumerate(ends) if end > char_index), len(ends)))
    return found
