"""``utk``: Untie the Knots, chunk-shuffle augmentation with a tracing task (Tian et al. 2024, "Untie the Knots: An
Efficient Data Augmentation Strategy for Long-Context Pre-Training in Language Models", arXiv 2409.04774; code
``rgtjf/Untie-the-Knots`` ``gpt_dataset_utk.py``).

Shapes: one row of ``t`` tokens (the training length) built from the documents that fill it.
```
with probability p the row's documents are cut, each into n pieces of equal length (else none is)
knots:   piece i ends with K[2i] and piece i+1 starts with K[2i+1]          2(n-1) added tokens K
shuffle: all pieces of all documents; the last piece of the last document stays last;
         keep_order: each document's pieces keep their order (a partial order), else any order
trace:   every piece of a cut document starts with  <D> id </D>  (id: a random id of id_length tokens);
         after a document's last-placed piece:      <S> id_1 <s> id_2 ... </S>  (ids in the original order)
loss:    not scored: knots, the token after a knot, <D> id </D>, the token after </D>, <S>, the token after
         </S>; scored: the text and the trace  id_1 <s> id_2 ... </S>  (the model must retrieve the pieces)
positions 0 .. t-1, full causal attention over the whole row (no document mask)
```
A document fragment fills at most ``share`` of a cut row (what is left of it opens the next row), so rows
interleave several documents even when documents are as long as the row (task samples at the training length).
The knots and the five trace markers are new token ids past the model's vocabulary (``prepare`` adds their
embedding rows, the pitfall the paper notes); the random ids are drawn from the row's own text tokens (the paper
tokenizes random 6-character strings; the recipes here see token ids, not text). The paper packs a sequence and
truncates it after adding the markers; here the markers are budgeted when the row is filled, so a row is exactly
t tokens and nothing is dropped (at short training lengths the truncated tail would be the trace itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from longreach.errors import LongreachError
from longreach.params import require
from longreach.train.recipe import IGNORE, Document, Recipe, TrainBatch, causal_lm, register_recipe

TRACE_MARKERS = 5  # <D> </D> <S> <s> </S>

# token kinds in an untied row: what the loss does with the token and with the token after it
TEXT, KNOT, PREFIX, OPEN, TRACE, CLOSE = range(6)


@dataclass(frozen=True)
class Markers:
    """Token ids of the knots (2(n-1) of them) and of the trace markers <D> </D> <S> <s> </S> (None: no trace)."""

    knots: tuple[int, ...]
    trace: tuple[int, int, int, int, int] | None = None

    @classmethod
    def past(cls, vocabulary: int, pieces: int, trace: bool) -> Markers:
        """Markers numbered from ``vocabulary`` on (rows added to the embedding by the recipe)."""
        knots = tuple(range(vocabulary, vocabulary + 2 * (pieces - 1)))
        start = vocabulary + len(knots)
        return cls(knots, tuple(range(start, start + TRACE_MARKERS)) if trace else None)  # type: ignore[arg-type]


@dataclass
class Untied:
    """An untied row: ``tokens`` and their ``kinds``; ``scored`` per token by the document (loss_start)."""

    tokens: list[int] = field(default_factory=list)
    kinds: list[int] = field(default_factory=list)
    scored: list[bool] = field(default_factory=list)

    def add(self, tokens: list[int] | tuple[int, ...], kind: int, scored: list[bool] | None = None) -> None:
        self.tokens.extend(tokens)
        self.kinds.extend([kind] * len(tokens))
        self.scored.extend(scored if scored is not None else [kind in (TRACE, CLOSE)] * len(tokens))

    def labels(self) -> list[int]:
        """Labels aligned with ``tokens`` (position j - 1 predicts token j), IGNORE where UtK does not score."""
        labels = []
        for j, (token, kind, scored) in enumerate(zip(self.tokens, self.kinds, self.scored, strict=True)):
            after = self.kinds[j - 1] if j else None
            wanted = scored and kind in (TEXT, TRACE, CLOSE) and after not in (KNOT, PREFIX, CLOSE)
            labels.append(token if wanted else IGNORE)
        return labels


def cut(document: Document, pieces: int) -> list[tuple[list[int], list[bool]]]:
    """``document`` in ``pieces`` pieces of equal length (the last takes the rest): (tokens, scored) each."""
    tokens = list(document.tokens)
    scored = [j >= document.loss_start for j in range(len(tokens))]
    if pieces <= 1 or len(tokens) < pieces:
        return [(tokens, scored)]
    bounds = [len(tokens) // pieces * i for i in range(pieces)] + [len(tokens)]
    return [(tokens[a:b], scored[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def shuffle_order(counts: list[int], rng: np.random.Generator, keep_order: bool) -> list[tuple[int, int]]:
    """(document, piece) in shuffled order for documents of ``counts`` pieces; the last piece of the last document
    stays last; with ``keep_order`` each document's pieces appear in their original order."""
    pieces = [(d, p) for d, count in enumerate(counts) for p in range(count)]
    last = pieces.pop()
    slots = rng.permutation(len(pieces))
    order: list[tuple[int, int] | None] = [None] * len(pieces)
    start = 0
    for d, count in enumerate(counts):
        mine = slots[start : start + count - (d == len(counts) - 1)]
        start += len(mine)
        for p, slot in enumerate(sorted(mine) if keep_order else mine):
            order[slot] = (d, p)
    return [piece for piece in order if piece is not None] + [last]


def untie(
    documents: list[Document],
    rng: np.random.Generator,
    markers: Markers,
    *,
    pieces: int | list[int],
    keep_order: bool = True,
    id_length: int = 6,
) -> Untied:
    """The UtK row of ``documents``, each cut into ``pieces`` (one count for all, or one per document; a document
    shorter than its count stays whole), knotted, shuffled and traced; :func:`overhead` tokens are added per cut
    document."""
    counts = pieces if isinstance(pieces, list) else [pieces] * len(documents)
    parts = [cut(d, n) for d, n in zip(documents, counts, strict=True)]
    order = shuffle_order([len(p) for p in parts], rng, keep_order)
    pool = sorted({t for d in documents for t in d.tokens[1:-1]}) or sorted({t for d in documents for t in d.tokens})
    ids = {piece: [int(t) for t in rng.choice(pool, size=id_length)] for piece in order}
    placed_last = {d: max(i for i, (dd, _) in enumerate(order) if dd == d) for d in range(len(parts))}
    row = Untied()
    for index, (d, p) in enumerate(order):
        tokens, scored = parts[d][p]
        traced = markers.trace is not None and len(parts[d]) > 1
        if traced:
            open_prefix, close_prefix = markers.trace[0], markers.trace[1]  # type: ignore[index]
            row.add([open_prefix, *ids[(d, p)], close_prefix], PREFIX)
        if p > 0:
            row.add([markers.knots[2 * (p - 1) + 1]], KNOT)
        row.add(tokens, TEXT, scored)
        if p < len(parts[d]) - 1:
            row.add([markers.knots[2 * p]], KNOT)
        if traced and placed_last[d] == index:
            start, separator, end = markers.trace[2], markers.trace[3], markers.trace[4]  # type: ignore[index]
            row.add([start], OPEN)
            for q in range(len(parts[d])):
                row.add(([separator] if q else []) + ids[(d, q)], TRACE)
            row.add([end], CLOSE)
    return row


def overhead(pieces: int, traced: bool, id_length: int) -> int:
    """Tokens UtK adds to a document cut into ``pieces``: its knots, and with the trace its prefixes and summary."""
    if pieces <= 1:
        return 0
    knots = 2 * (pieces - 1)
    trace = pieces * (id_length + 2) + 2 + pieces * id_length + pieces - 1
    return knots + (trace if traced else 0)


def fill(
    documents: Iterator[Document], pending: list[Document], length: int, pieces: int, cost: int, most: int
) -> tuple[list[Document], list[int]] | None:
    """Document fragments and their piece counts whose untied row is exactly ``length`` tokens long (None when the
    stream ends first). A fragment cut into ``pieces`` costs ``cost`` marker tokens and holds at most ``most``
    tokens, so a cut row interleaves several documents; a fragment too short to cut, or cut where no room is left
    for the markers, stays whole. What a document has left waits in ``pending`` for the next row."""
    group: list[Document] = []
    counts: list[int] = []
    later: list[Document] = []
    room = length
    while room > 0:
        document = pending.pop(0) if pending else next(documents, None)
        if document is None:
            return None
        take = min(len(document.tokens), room - cost, most)
        count = pieces if pieces > 1 and take >= pieces else 1
        if count == 1:
            take = min(len(document.tokens), room)
        group.append(Document(document.tokens[:take], min(document.loss_start, take), document.kind))
        counts.append(count)
        rest = Document(document.tokens[take:], max(0, document.loss_start - take), document.kind)
        if rest.tokens:
            later.append(rest)
        room -= take + (cost if count > 1 else 0)
    pending.extend(later)
    return group, counts


@register_recipe
@dataclass(frozen=True)
class Utk(Recipe):
    """Knotted, shuffled document pieces with the back-tracing task, full causal attention."""

    pieces: int = field(default=3, metadata={"help": "pieces a cut document is split into (>= 2)"})
    split: float = field(default=0.3, metadata={"help": "share of rows whose documents are cut (paper: 0.3)"})
    keep_order: bool = field(default=True, metadata={"help": "a document's pieces keep their order when shuffled"})
    trace: bool = field(default=True, metadata={"help": "the tracing task: <D> id </D> prefixes and <S> ... </S>"})
    id_length: int = field(default=6, metadata={"help": "tokens of a piece's random id"})
    share: float = field(default=0.5, metadata={"help": "largest share of a cut row one document fragment fills"})
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    name: ClassVar[str] = "utk"
    summary: ClassVar[str] = "Untie the Knots: documents cut, knotted and shuffled, with a back-tracing task"
    paper: ClassVar[str] = "Tian et al. 2024, Untie the Knots"
    example: ClassVar[str] = "utk:split=1"

    def __post_init__(self) -> None:
        require(self.pieces >= 2, f"utk: pieces must be >= 2; got {self.pieces}")
        require(0.0 <= self.split <= 1.0, f"utk: split must be in [0, 1]; got {self.split:g}")
        require(self.id_length >= 1, f"utk: id_length must be >= 1; got {self.id_length}")
        require(0.0 < self.share <= 1.0, f"utk: share must be in (0, 1]; got {self.share:g}")

    @property
    def added_tokens(self) -> int:
        """Token ids the recipe adds past the vocabulary: the knots and the trace markers."""
        return 2 * (self.pieces - 1) + (TRACE_MARKERS if self.trace else 0)

    def markers(self) -> Markers:
        if "vocabulary" not in self._state:
            raise LongreachError("utk: the marker tokens are added by prepare(model, length); call it first")
        return Markers.past(self._state["vocabulary"], self.pieces, self.trace)

    def prepare(self, model: Any, length: int) -> None:
        lm = causal_lm(model)
        vocabulary = lm.get_input_embeddings().num_embeddings
        lm.resize_token_embeddings(vocabulary + self.added_tokens, mean_resizing=False)
        with torch.no_grad():  # new rows: the mean embedding plus small distinct noise (deterministic)
            generator = torch.Generator().manual_seed(0)
            modules = (lm.get_input_embeddings(), lm.get_output_embeddings())
            for weight in {id(m.weight): m.weight for m in modules if m is not None}.values():  # once if tied
                old = weight[:vocabulary]
                noise = torch.randn(self.added_tokens, old.shape[1], generator=generator).to(old)
                weight[vocabulary:] = old.mean(0) + old.float().std().to(old.dtype) * noise
        self._state["vocabulary"] = vocabulary

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        """Rows of exactly ``length`` tokens: a share ``split`` of them with their documents cut (the markers
        budgeted, so nothing is truncated), the rest whole documents shuffled."""
        markers, stream, pending = self.markers(), iter(documents), []
        cost = overhead(self.pieces, self.trace, self.id_length)
        while True:
            pieces = self.pieces if rng.random() < self.split else 1
            filled = fill(stream, pending, length, pieces, cost, max(pieces, int(self.share * length)))
            if filled is None:
                return
            group, counts = filled
            row = untie(group, rng, markers, pieces=counts, keep_order=self.keep_order, id_length=self.id_length)
            yield TrainBatch(torch.tensor([row.tokens]), torch.tensor([row.labels()]), torch.arange(length)[None])
