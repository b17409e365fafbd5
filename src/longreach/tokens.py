"""How text becomes the token ids a model sees. Tasks count with these functions and the backend encodes
with them, so a prompt generated at N tokens is exactly N tokens when the model reads it."""

from __future__ import annotations

import bisect
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
    parts: tuple[tuple[int, int, Any], ...] = ()  # (first char, first token, ``tokenizers.Encoding``) per chunk
    reused_chars: int = 0  # leading characters whose tokens were taken from an earlier encoding

    def token_indices_of_chars(self, char_indices: list[int]) -> list[int]:
        """For each character index, the index of the first token that ends after it."""
        if not self.parts:
            return [count(self.tokenizer, self.text[:c]) for c in char_indices]
        starts = [start for start, _, _ in self.parts]
        found = []
        for char_index in char_indices:
            index = None
            while index is None and 0 <= char_index < len(self.text):  # spaces trimmed off tokens map to none
                chunk_start, token_start, rust = self.parts[bisect.bisect_right(starts, char_index) - 1]
                local = rust.char_to_token(char_index - chunk_start)
                index = None if local is None else token_start + local
                char_index += 1
            found.append(len(self.ids) if index is None else index)
        return found


def _rust_backend(tokenizer: Any) -> Any:
    """A fast tokenizer's Rust ``tokenizers.Tokenizer``, or None for slow tokenizers."""
    return getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None


def piece_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of many short texts, without special tokens (fast tokenizers: one Rust batch call)."""
    backend = _rust_backend(tokenizer)
    if backend is None:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return [len(encoding.ids) for encoding in backend.encode_batch(texts, add_special_tokens=False)]


_PARALLEL_CHARS = 400_000  # below this one call is as fast as splitting
_CHUNKS = 16
_WINDOW = 96


def encode_with_offsets(tokenizer: Any, text: str, previous: Encoding | None = None) -> Encoding:
    """One tokenization giving both the ids and (for fast tokenizers) the character-to-token map.

    Fast tokenizers are called through their Rust backend (the same ids as ``encode``, without building
    Python offset lists). Long texts are cut into chunks at pre-token starts (a space between two non-space
    characters) and encoded in parallel, when the tokenizer's pre-tokenizer splits words by regex
    (byte-level BPE: GPT-2, Llama 3, Qwen, SmolLM) and adds special tokens only in front. Such a cut is a
    pre-token boundary, so the ids are the ones a single call gives; every cut is also checked on a window
    around it (one call over the window equals the two halves), else the text is encoded in one call.

    ``previous``: an earlier chunked encoding of a text that ``text`` shares a long prefix with (the fitter
    edits only the end of a haystack). Its chunks that end, with their checked window, inside the shared
    prefix are reused and only the rest is encoded (:attr:`Encoding.reused_chars` says how much was reused).
    """
    backend = _rust_backend(tokenizer)
    if backend is None:
        return Encoding(tokenizer, text, encode(tokenizer, text))
    if previous is not None and len(previous.parts) > 1:
        reused = _reencode_suffix(backend, previous, text)
        if reused is not None:
            return reused
    if len(text) >= _PARALLEL_CHARS and _splits_by_regex(backend):
        parts = _encode_chunks(backend, text)
        if parts is not None:
            ids = [i for _, _, rust in parts for i in rust.ids]
            return Encoding(tokenizer, text, ids, parts)
    rust = backend.encode(text, add_special_tokens=True)
    return Encoding(tokenizer, text, rust.ids, ((0, 0, rust),))


def _reencode_suffix(backend: Any, previous: Encoding, text: str) -> Encoding | None:
    """``text`` encoded by reusing ``previous``'s chunks inside the shared prefix; None when none can be."""
    shared = _shared_prefix(previous.text, text)
    keep = 0  # chunks kept: chunk j ends at the start of chunk j + 1, whose cut was checked on +-_WINDOW chars
    while keep + 1 < len(previous.parts) and previous.parts[keep + 1][0] + _WINDOW <= shared:
        keep += 1
    if keep == 0:
        return None
    cut, first_token, _ = previous.parts[keep]
    if len(text) - cut >= _PARALLEL_CHARS:
        return None
    rust = backend.encode(text[cut:], add_special_tokens=False)
    parts = (*previous.parts[:keep], (cut, first_token, rust))
    return Encoding(previous.tokenizer, text, previous.ids[:first_token] + rust.ids, parts, reused_chars=cut)


def _shared_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings (bisection over C-speed slice comparisons)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid - 1)
    return lo


def _splits_by_regex(backend: Any) -> bool:
    pre = backend.pre_tokenizer
    names = {type(p).__name__ for p in getattr(pre, "pre_tokenizers", [pre])} if pre is not None else set()
    regex = "ByteLevel" in names and ("Split" in names or getattr(pre, "use_regex", False))
    if backend.normalizer is not None or not regex or type(backend.model).__name__ != "BPE":
        return False
    plain = backend.encode("a b", add_special_tokens=False).ids
    full = backend.encode("a b", add_special_tokens=True).ids
    return full[len(full) - len(plain) :] == plain  # special tokens, if any, only in front


def _encode_chunks(backend: Any, text: str) -> tuple[tuple[int, int, Any], ...] | None:
    size = len(text) // _CHUNKS
    cuts = [0]
    for k in range(1, _CHUNKS):
        cut = _pre_token_start(text, k * size)
        if cut is None or cut <= cuts[-1]:
            return None
        cuts.append(cut)
    cuts.append(len(text))
    for cut in cuts[1:-1]:
        left, right = text[cut - _WINDOW : cut], text[cut : cut + _WINDOW]
        halves = backend.encode_batch([left, right, left + right], add_special_tokens=False)
        if len(halves[0].ids) + len(halves[1].ids) != len(halves[2].ids):
            return None
    chunks = [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    encoded = backend.encode_batch(chunks, add_special_tokens=False)
    specials = backend.encode("", add_special_tokens=True).ids
    first = backend.encode(chunks[0], add_special_tokens=True) if specials else encoded[0]
    encoded[0] = first
    parts, token = [], 0
    for start, rust in zip(cuts, encoded, strict=False):
        parts.append((start, token, rust))
        token += len(rust.ids)
    return tuple(parts)


def _pre_token_start(text: str, near: int) -> int | None:
    """The first index at or after ``near`` holding a space between two non-space characters. No byte-level
    BPE pre-token runs from a non-space character into a following space, so a pre-token starts there."""
    for i in range(max(1, near), min(len(text) - 1, near + 20_000)):
        if text[i] == " " and not text[i - 1].isspace() and not text[i + 1].isspace():
            return i
    return None


def token_indices_of_chars(tokenizer: Any, text: str, char_indices: list[int]) -> list[int]:
    """For each character index of ``text``, the index of the first token that ends after it."""
    return encode_with_offsets(tokenizer, text).token_indices_of_chars(char_indices)
