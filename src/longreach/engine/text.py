"""The answer's text as its tokens arrive, for the stop checks of greedy decoding.

Re-decoding every new id list costs O(n) a step (O(n^2) an answer); tokenizers' ``DecodeStream`` adds each token's
text in O(1). The streamed text equals a full decode of the ids so far except for a character still incomplete at
its end (a multi-byte UTF-8 character split over tokens, which a full decode shows as U+FFFD and the stream holds
back), so a stop found in the stream is confirmed on one full decode, and the final text is one full decode: the
answer is exactly what decoding the ids gives (unless a stop string itself contains U+FFFD). Slow tokenizers, and
tokenizers whose decode cleans up spaces after decoding (WordPiece-style cleanup; transformers skips it for BPE),
re-decode every step.
"""

from __future__ import annotations

from typing import Any

from longreach.generation import cut_at_stop


def _incremental(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is None:
        return False
    cleans = getattr(tokenizer, "clean_up_tokenization_spaces", False)
    return not cleans or type(backend.model).__name__ == "BPE"


class AnswerText:
    """Token ids of an answer and its text (special tokens skipped). ``incremental=False`` re-decodes the whole
    answer at every token (the engine's behaviour before ``DecodeStream``, kept for before/after measurements)."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], incremental: bool = True) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.ids: list[int] = []
        self._stream: Any = None
        self._streamed = ""
        if incremental and _incremental(tokenizer):
            from tokenizers.decoders import DecodeStream

            self._stream = DecodeStream(skip_special_tokens=True)

    def decode(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def add(self, token: int) -> str | None:
        """Take the next token; returns the answer cut at a stop string once one occurs, else None."""
        self.ids.append(token)
        if self._stream is None:
            return cut_at_stop(self.decode(), self.stops)
        chunk = self._stream.step(self.tokenizer.backend_tokenizer, token)
        if chunk:
            self._streamed += chunk
        if not self.stops or cut_at_stop(self._streamed, self.stops) is None:
            return None
        return cut_at_stop(self.decode(), self.stops)  # confirmed on the full decode (exact)
