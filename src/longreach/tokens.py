"""How text becomes the token ids a model sees. Tasks count with these functions and the backend encodes
with them, so a prompt generated at N tokens is exactly N tokens when the model reads it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as the backend sends it (with the tokenizer's own special tokens, e.g. BOS)."""
    return tokenizer(text, add_special_tokens=True)["input_ids"]


def count(tokenizer: Any, text: str) -> int:
    return len(encode(tokenizer, text))


@dataclass(frozen=True)
class Encoding:
    """``text`` encoded once: its ids, and a way to map characters to tokens."""

    tokenizer: Any
    text: str
    ids: list[int]
    rust: Any = None  # a ``tokenizers.Encoding`` when the tokenizer is a fast one

    def token_indices_of_chars(self, char_indices: list[int]) -> list[int]:
        """For each character index, the index of the first token that ends after it."""
        if self.rust is None:
            return [count(self.tokenizer, self.text[:c]) for c in char_indices]
        found = []
        for char_index in char_indices:
            index = None
            while index is None and 0 <= char_index < len(self.text):  # spaces trimmed off tokens map to none
                index = self.rust.char_to_token(char_index)
                char_index += 1
            found.append(len(self.ids) if index is None else index)
        return found


def encode_with_offsets(tokenizer: Any, text: str) -> Encoding:
    """One tokenization giving both the ids and (for fast tokenizers) the character-to-token map.

    Fast tokenizers are called through their Rust backend directly (the same ids as ``encode``, without
    building Python offset lists: at a million tokens that saves about half a second).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return Encoding(tokenizer, text, encode(tokenizer, text))
    rust = backend.encode(text, add_special_tokens=True)
    return Encoding(tokenizer, text, rust.ids, rust)


def token_indices_of_chars(tokenizer: Any, text: str, char_indices: list[int]) -> list[int]:
    """For each character index of ``text``, the index of the first token that ends after it."""
    return encode_with_offsets(tokenizer, text).token_indices_of_chars(char_indices)
