"""One request inside the server: its prompt ids, how it samples and stops, its decode state, and the events it
sends back to the HTTP side (text deltas, then one end).

Stopping follows the engine exactly (same end-of-sequence ids, :func:`~longreach.generation.cut_at_stop` on the
decoded text, ``max_tokens`` new tokens), so a greedy request answers what ``longreach eval`` with the ``hf``
backend answers. Streamed deltas hold back a tail that may still become a stop string or an incomplete character.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from longreach.generation import cut_at_stop
from longreach.serve.schemas import ApiError
from longreach.serve.stacks import ServedStack


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens (greedy at temperature 0, else seeded sampling with nucleus ``top_p``) and when to stop."""

    max_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (end of sequence or a stop string) or "length" (max_tokens)
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    error: ApiError


Event = Delta | Finished | Failed


@dataclass(eq=False)
class Job:
    """A request from admission to its end. The scheduler thread owns the decode state; ``events`` is read on
    the event loop, which ``emit`` reaches thread-safely."""

    served: ServedStack
    prompt: str
    prompt_ids: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    deadline: float
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    new_ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    next_id: int = -1  # the chosen token not yet read into the cache
    cache: Any = None  # a decode alone keeps its own cache; a batched one lives in its batch
    reserved: int = 0  # KV bytes admission holds for this job
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.sampling.temperature > 0:
            self.generator = torch.Generator().manual_seed(self.sampling.seed)

    @property
    def need_tokens(self) -> int:
        """Tokens of KV cache the request can grow to."""
        return len(self.prompt_ids) + self.sampling.max_tokens

    @property
    def position(self) -> int:
        """The position of ``next_id`` in the sequence."""
        return len(self.prompt_ids) + len(self.new_ids) - 1

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def cancel(self) -> None:
        """Called from the HTTP side (client gone): the scheduler drops the job at its next step."""
        self.cancelled = True

    def emit(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            self.cancelled = True

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from ``logits`` (vocab,): argmax at temperature 0, else a seeded nucleus sample."""
        if self.generator is None:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / self.sampling.temperature, dim=-1)
        if self.sampling.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > self.sampling.top_p
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs.masked_fill(outside, 0.0))
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def accept(self, token: int, eos_ids: set[int], tokenizer: Any) -> bool:
        """Take the chosen ``token``; stream what is safe to send. True when the request is finished (then its
        end is emitted); otherwise ``token`` is the next one to read."""
        if token in eos_ids:
            return self._finish("stop")
        self.new_ids.append(token)
        text = tokenizer.decode(self.new_ids, skip_special_tokens=True)
        cut = cut_at_stop(text, self.sampling.stop)
        if cut is not None:
            self.text = cut
            return self._finish("stop")
        self.text = text
        if len(self.new_ids) >= self.sampling.max_tokens:
            return self._finish("length")
        self.next_id = token
        safe = _safe_end(text, self.sampling.stop)
        if safe > self.sent:
            self.emit(Delta(text[self.sent : safe]))
            self.sent = safe
        return False

    def _finish(self, reason: str) -> bool:
        if len(self.text) > self.sent:
            self.emit(Delta(self.text[self.sent :]))
            self.sent = len(self.text)
        self.emit(Finished(reason, len(self.prompt_ids), len(self.new_ids)))
        return True


def _safe_end(text: str, stops: tuple[str, ...]) -> int:
    """How much of ``text`` can be sent: not a trailing incomplete character, nor a tail that begins a stop."""
    end = len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end -= size
                break
    return end
