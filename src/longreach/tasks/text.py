"""``text``: a long text the model is scored on token by token (perplexity), read from a local file.

Sample ``index`` at length L is the file's tokens [index x L, (index + 1) x L), as text: the same document for every
method, and nested starts across lengths (a 4K sample is the first half of the 8K one). Nothing is generated or
downloaded; the user gives the file (any long plain text: a book, or Debian's ``python3-doc`` HTML turned to text).
``mode``: ``full`` scores every token from its whole prefix in one pass; ``sliding`` reads windows of ``window``
tokens moving by ``stride`` (defaults: the model's native window and half of it). Loss by position is reported in
buckets of ``bucket`` tokens.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from longreach import tokens
from longreach.errors import LongreachError
from longreach.params import require
from longreach.prompts import RAW, PromptFormat
from longreach.tasks.base import Sample, Task, register_family


@functools.cache
def read_text(path: str) -> str:
    """The file's text (UTF-8; undecodable bytes replaced)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise LongreachError(f"text: no such file {path!r} (give a local plain-text file, e.g. a book)")
    text = file.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise LongreachError(f"text: {path} is empty")
    return text


def token_span(tokenizer: Any, text: str, first: int, length: int) -> str:
    """The text of the tokens that start at token ``first`` of ``text``, cut at a token boundary so that the engine
    encodes it (special tokens included) to exactly ``length`` tokens; raises when the file is too short."""
    body = length - tokens.count(tokenizer, "")  # the tokenizer's own special tokens (e.g. BOS) count too
    chars = (first + body) * 8 + 64
    while True:
        offsets = tokenizer(text[:chars], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) > first + body + 8 or chars >= len(text):
            break
        chars *= 2
    if len(offsets) < first + body:
        raise LongreachError(
            f"text: the file holds {len(offsets)} tokens; a sample of {length} tokens starting at token {first} "
            "needs more (use a longer file, shorter lengths or fewer samples)"
        )
    begin = offsets[first - 1][1] if first else 0  # from the end of the token before: leading spaces included
    for end in sorted(range(first + body - 8, first + body + 9), key=lambda k: abs(k - first - body)):
        if first < end <= len(offsets):
            span = text[begin : offsets[end - 1][1]]
            if tokens.count(tokenizer, span) == length:
                return span
    raise LongreachError(f"text: no cut of the file at token {first} encodes to exactly {length} tokens")


@register_family
@dataclass(frozen=True)
class LongText(Task):
    """Perplexity over a local long text (full context or sliding window)."""

    path: str = field(default="", metadata={"help": "a local plain-text file"})
    mode: Literal["full", "sliding"] = field(default="full", metadata={"help": "full | sliding"})
    window: int = field(default=0, metadata={"help": "sliding: tokens a window reads (0: the native window)"})
    stride: int = field(default=0, metadata={"help": "sliding: tokens a window moves (0: half the window)"})
    bucket: int = field(default=1024, metadata={"help": "tokens per position bucket of the loss curve"})

    family: ClassVar[str] = "text"
    summary: ClassVar[str] = "perplexity over your own long text: text:path=FILE (full context or sliding window)"
    uses_depth: ClassVar[bool] = False
    generated: ClassVar[bool] = False
    measures: ClassVar[str] = "loss"
    diffusion: ClassVar[None] = None  # no question: every token is scored, nothing to find
    scope: ClassVar[None] = None

    def __post_init__(self) -> None:
        require(bool(self.path), "text: give a file, e.g. text:path=book.txt")
        require(self.window >= 0 and self.stride >= 0, f"text: window and stride must be >= 0; got {self}")
        require(self.bucket >= 1, f"text: bucket must be >= 1 token; got {self.bucket}")
        require(
            not (self.stride and self.window and self.stride > self.window),
            f"text: stride {self.stride} is larger than the window {self.window}: tokens would go unscored",
        )
        read_text(self.path)

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        span = token_span(tokenizer, read_text(self.path), index * context_length, context_length)
        return Sample(
            task="text",
            context=span,
            question="",
            answers=(),
            max_new_tokens=0,
            meta={"realized_tokens": context_length, "source": self.path, "first_token": index * context_length},
        )

    def windows(self, native: int) -> tuple[int | None, int | None]:
        """(window, stride) for the engine: None, None reads the whole sample at once."""
        if self.mode == "full":
            return None, None
        window = self.window or native
        return window, self.stride or max(1, window // 2)

    def score(self, sample: Sample, prediction: str) -> float:
        raise LongreachError("text: a perplexity sample is scored by its token losses, not by an answer")
