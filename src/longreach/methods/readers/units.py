"""What the text readers share: the prompt cut into units from ONE tokenization (and grouped into the chunks read
step by step), the question's attention over a context, and a reading's total cost.

Units are cut by token offsets: the prompt is tokenized once (no special tokens) and each context token belongs to
the sentence that holds its last character (a word token carries its leading space), so joined again, units +
question are exactly the prompt's tokens. A sentence ends after . ! ? and whitespace, or at a line break; a unit is
one sentence (``pack=False``) or consecutive sentences of one paragraph packed up to ``unit`` tokens
(``pack=True``; a paragraph ends at a blank line); a longer sentence is split every ``unit`` tokens.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from longreach.generation import Generation
from longreach.models import adapter

if TYPE_CHECKING:
    from longreach.methods.readers.base import ReadingEngine
    from longreach.methods.spec import MethodStack

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences with the whitespace that follows them, so ``"".join(split_sentences(t)) == t``. A sentence
    ends after . ! ? and whitespace, or at a line break (InfiniRetri's reference splits at blank lines only; single
    line breaks also give line-structured haystacks, such as JSON or lists, units to select)."""
    pieces, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


@dataclass(frozen=True)
class Cut:
    """The prompt's tokens (one tokenization, no special tokens) as context units + question.

    ``units[i]`` are token ids, ``spans[i]`` the unit's (first char, end char) in the prompt, ``starts[i]`` its
    first token's index in the context; ``paragraph_ends[i]``: the unit ends a paragraph (a blank line follows)."""

    prompt: str
    units: list[list[int]]
    spans: list[tuple[int, int]]
    starts: list[int]
    paragraph_ends: list[bool]
    question: list[int]
    offsets: list[tuple[int, int]]  # (begin, end) chars of every context token

    def text(self, i: int) -> str:
        return self.prompt[self.spans[i][0] : self.spans[i][1]]

    def ids(self, chosen: list[int]) -> list[int]:
        return [t for i in chosen for t in self.units[i]]

    @property
    def context_tokens(self) -> int:
        return len(self.offsets)


def cut_units(tokenizer: Any, prompt: str, question_offset: int, unit: int, pack: bool = False, head: int = 0) -> Cut:
    """The prompt tokenized once and its context cut into units of at most ``unit`` tokens (see the module doc).
    ``head``: a unit boundary after the first ``head`` context tokens (a reader's always-kept lead)."""
    encoding = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    pieces = split_sentences(prompt[:question_offset])
    starts = list(itertools.accumulate((len(s) for s in pieces), initial=0))
    ends_paragraph = [piece.rstrip(" \t").endswith("\n\n") for piece in pieces]
    units: list[list[int]] = []
    offsets: list[tuple[int, int]] = []
    unit_offsets: list[list[tuple[int, int]]] = []
    unit_sentences: list[int] = []
    question: list[int] = []
    current = -1
    for token, (begin, end) in zip(encoding["input_ids"], encoding["offset_mapping"], strict=True):
        last = max(begin, end - 1)
        if last >= question_offset or question:
            question.append(token)
            continue
        sentence = bisect.bisect_right(starts, last) - 1
        if not units or sentence != current or len(units[-1]) == unit or len(offsets) == head:
            units.append([])
            unit_offsets.append([])
            unit_sentences.append(sentence)
        units[-1].append(token)
        unit_offsets[-1].append((begin, end))
        offsets.append((begin, end))
        current = sentence
    if pack:
        units, unit_offsets, unit_sentences = _pack(units, unit_offsets, unit_sentences, ends_paragraph, unit, head)
    first = list(itertools.accumulate(map(len, units), initial=0))[:-1]
    spans = [(o[0][0], o[-1][1]) for o in unit_offsets]
    return Cut(prompt, units, spans, first, [ends_paragraph[s] for s in unit_sentences], question, offsets)


def _pack(
    units: list[list[int]],
    offsets: list[list[tuple[int, int]]],
    sentences: list[int],
    ends_paragraph: list[bool],
    unit: int,
    head: int,
) -> tuple[list[list[int]], list[list[tuple[int, int]]], list[int]]:
    """Sentence pieces joined while one paragraph's consecutive pieces fit in ``unit`` tokens (never across the
    ``head`` boundary)."""
    packed: list[list[int]] = []
    packed_offsets: list[list[tuple[int, int]]] = []
    packed_sentences: list[int] = []
    used = 0
    for tokens, where, sentence in zip(units, offsets, sentences, strict=True):
        joinable = (
            packed
            and not ends_paragraph[packed_sentences[-1]]
            and len(packed[-1]) + len(tokens) <= unit
            and used != head
        )
        if joinable:
            packed[-1] = packed[-1] + tokens
            packed_offsets[-1] = packed_offsets[-1] + where
            packed_sentences[-1] = sentence
        else:
            packed.append(list(tokens))
            packed_offsets.append(list(where))
            packed_sentences.append(sentence)
        used += len(tokens)
    return packed, packed_offsets, packed_sentences


def sentence_units(tokenizer: Any, prompt: str, question_offset: int, unit: int) -> tuple[list[list[int]], list[int]]:
    """Sentence units (at most ``unit`` tokens) of the context and the question's tokens; see :func:`cut_units`."""
    cut = cut_units(tokenizer, prompt, question_offset, unit)
    return cut.units, cut.question


class _Stop(Exception):
    """Raised inside the forward once the selection layer has been scored: later layers are not needed."""


def question_attention(
    engine: ReadingEngine, inner: MethodStack, step_ids: torch.Tensor, m: int, layer: int
) -> torch.Tensor:
    """Attention probabilities (m, n) of the last ``m`` rows (the question) over all n tokens of ``step_ids``
    (1, n), summed over heads, at ``layer`` (negative: from the last), under ``inner``. Layers after it are
    skipped (the forward stops there)."""
    model = engine.loaded.model
    layers = len(adapter.attention_modules(model))
    target = layer % layers
    found: dict[str, torch.Tensor] = {}

    def kernel(call: adapter.AttentionCall, below: adapter.Kernel) -> torch.Tensor:
        if call.layer != target:  # other layers: whatever attention the inner stack runs
            return below(call)
        query = call.rotate(call.query, call.positions)
        keys = call.rotate(call.key, call.positions).repeat_interleave(call.groups, dim=1)
        rows = query[:, :, -m:] @ keys.transpose(-1, -2) * call.scaling  # (b, h, m, n)
        causal = torch.arange(keys.shape[2]) > (call.positions[-m:, None])
        found["probs"] = rows.float().masked_fill(causal, float("-inf")).softmax(-1).sum(dim=1)[0]  # (m, n)
        raise _Stop

    with torch.inference_mode(), inner.applied(engine.loaded), adapter.attention_kernel(model, kernel):
        try:
            positions = torch.arange(step_ids.shape[1]).unsqueeze(0)
            model.model(input_ids=step_ids, position_ids=positions, use_cache=False)
        except _Stop:
            pass
    return found["probs"]


def phrase_scores(probs: torch.Tensor, offset: int, width: int, phrase: int) -> torch.Tensor:
    """Per context token (c,) of columns offset..offset+width of ``probs`` (m, n): a 1-D convolution with ``phrase``
    ones smooths each question row (InfiniRetri's phrase scores), rows weighted by the attention they give the
    question itself (the columns after the context), summed over rows."""
    to_context = probs[:, offset : offset + width]  # (m, c)
    padded = torch.nn.functional.pad(to_context[:, None, :], (phrase // 2, (phrase - 1) // 2))
    smoothed = torch.nn.functional.conv1d(padded, torch.ones(1, 1, phrase))[:, 0, :]  # "same" width
    weights = probs[:, offset + width :].sum(dim=1, keepdim=True)  # (m, 1): attention among the question
    return (weights * smoothed).sum(dim=0)


def leading(units: list[list[int]], budget: int) -> list[int]:
    """Indices of the first units that fit in ``budget`` tokens."""
    chosen, used = [], 0
    for i, tokens in enumerate(units):
        if used + len(tokens) > budget:
            break
        chosen.append(i)
        used += len(tokens)
    return chosen


def group_units(units: list[list[int]], indices: list[int], size: int) -> list[list[int]]:
    """``indices`` (of ``units``) in consecutive groups of at most ``size`` tokens, in order (a longer unit is a group
    of its own): the chunks a reader reads one step at a time."""
    groups: list[list[int]] = [[]]
    used = 0
    for i in indices:
        if groups[-1] and used + len(units[i]) > size:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += len(units[i])
    return [g for g in groups if g]


def time_now() -> float:
    return time.perf_counter()


def with_reading_cost(generation: Generation, seconds: float, prompt_tokens: int) -> Generation:
    """The answer's generation with the whole reading's wall time and the original prompt length."""
    return dataclasses.replace(generation, seconds=seconds, prompt_tokens=prompt_tokens)
