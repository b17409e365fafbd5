"""What the engine and every backend take and return: text requests in, generations with their costs out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

QuestionMode = Literal["aware", "agnostic"]
QUESTION_MODES: tuple[QuestionMode, ...] = ("aware", "agnostic")


@dataclass(frozen=True)
class Request:
    """One greedy generation: continue ``prompt`` for at most ``max_new_tokens``, stopping at ``stop``.

    ``question_offset`` is the character offset where the question begins in ``prompt`` (the context is
    ``prompt[:question_offset]``). ``mode`` says when a cache method compresses: ``aware`` after the whole
    prompt but its last token is read (the question is seen), ``agnostic`` after the context alone (the
    compressed context then serves any question). Without a cache method both read the same tokens.
    ``chat`` is (user message, start of the assistant turn) when ``prompt`` is a chat-templated prompt: a chat
    API sends those instead of the text.
    """

    prompt: str
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    question_offset: int | None = None
    mode: QuestionMode = "aware"
    chat: tuple[str, str] | None = None

    @property
    def context(self) -> str:
        return self.prompt if self.question_offset is None else self.prompt[: self.question_offset]

    @property
    def question(self) -> str:
        return "" if self.question_offset is None else self.prompt[self.question_offset :]


@dataclass(frozen=True)
class Generation:
    """The continuation and what it cost. ``kv_cache_bytes`` is physical (tensor storage), not logical."""

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    prefill_seconds: float
    peak_rss_mb: float = 0.0
    kv_cache_bytes: int = 0
    reused_tokens: int = 0  # prompt tokens taken from a previous request's cache instead of recomputed
    decode_seconds: float = 0.0  # the single-token steps after the first new token
    decode_steps: int = 0  # how many single-token forwards those were
    # cache bytes once a cache method has compressed what it compresses (question-aware: the prompt but its last
    # token; question-agnostic: the context); without a cache method, once the prompt (aware) or context is read
    compressed_kv_bytes: int = 0
    peak_gpu_mb: float = 0.0  # peak memory allocated on the GPU during the request (0 on the CPU)


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str | None:
    """``text`` up to the first stop string that follows some non-blank output; None if none occurs."""
    start = len(text) - len(text.lstrip())
    cuts = [text.find(stop, start) for stop in stops]
    cuts = [c for c in cuts if c > start]
    return text[: min(cuts)] if cuts else None


@dataclass(frozen=True)
class LossRequest:
    """Teacher-forced next-token losses over ``text`` (perplexity). ``window``: the tokens each forward reads
    (None: the whole text in one pass, full context); ``stride``: how far consecutive windows move (sliding window;
    each scores only the tokens the previous ones did not)."""

    text: str
    window: int | None = None
    stride: int | None = None


@dataclass(frozen=True)
class Losses:
    """Per-token negative log-likelihoods (nats) of every token after the first, and what they cost."""

    nll: list[float]
    tokens: int
    seconds: float
    peak_rss_mb: float = 0.0
    peak_gpu_mb: float = 0.0
