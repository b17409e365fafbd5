"""The training-recipe interface: documents in, batches out, a loss, and the model changes a recipe makes.

Shapes (ein notation): ``b`` rows of a batch, ``t`` tokens of a row (the training length, or a bucket of it),
``q``/``k`` query and key positions of a mask, ``h`` hidden size, ``v`` vocabulary.

A recipe is a frozen dataclass whose fields are its knobs, parsed from a spec (``abf:theta=500000``) by
:mod:`longreach.params`, and registered where it is defined (one file under :mod:`longreach.train.recipes`,
``@register_recipe``). One training run (:mod:`longreach.train.loop`) calls it in this order::

    recipe.prepare(model, length)                       # in place, before LoRA: RoPE config, added modules
    documents = data (mixed by kind as recipe.mix() asks)
    for step in recipe.steps(documents, length, batch_tokens, rng):      # list[TrainBatch] per optimizer step
        for batch in step: recipe.loss(model, batch) * batch's share of the step's tokens -> backward
    merge LoRA, save_pretrained, recipe.finish(model, out)

Most recipes override one or two of these: a RoPE recipe only ``prepare``; a data recipe only ``batches``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from longreach import params
from longreach.errors import LongreachError
from longreach.models.adapter import text_config
from longreach.registry import Registry

IGNORE = -100  # the label of a token that is not scored (transformers' convention)
LOGIT_CHUNK = 1024  # positions whose logits exist at once in the loss (ProLong computes logits in blocks)

RECIPES: Registry[type[Recipe]] = Registry("recipe", packages=("longreach.train.recipes",))


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: a recipe registers itself under its ``name`` where it is defined."""
    return RECIPES.add(cls.name, cls)


@dataclass(frozen=True)
class Document:
    """One training document as token ids (the tokenizer's special tokens and a closing EOS included).

    ``loss_start``: tokens before this index are context only (a task prompt), never scored; 0 scores all.
    ``kind``: ``"long"`` (long text, a long task sample) or ``"short"`` (short instruction data, ProLong's mix).
    """

    tokens: tuple[int, ...]
    loss_start: int = 0
    kind: str = "long"


@dataclass
class TrainBatch:
    """One forward pass of training.

    ``input_ids`` (b, t); ``labels`` (b, t) aligned like transformers' labels (the loss shifts them: position
    ``j - 1`` predicts ``labels[:, j]``), ``-100`` where not scored; ``position_ids`` (b, t);
    ``attention_mask`` (b, 1, t, t) bool, True where query q may attend key k, or None for plain causal attention;
    ``extras``: recipe-specific tensors (``document_ids`` (b, t) from masked packing).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        """Tokens this batch reads (b x t): what ``--batch-tokens`` counts."""
        return self.input_ids.numel()

    @property
    def scored(self) -> int:
        """Tokens whose prediction the loss scores."""
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device: str | torch.device) -> TrainBatch:
        """The batch with every tensor on ``device``."""
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        return TrainBatch(
            self.input_ids.to(device),
            self.labels.to(device),
            self.position_ids.to(device),
            mask,
            {key: value.to(device) for key, value in self.extras.items()},
        )


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Causal AND same-document attention: document_ids (b, t) -> mask (b, 1, q, k) bool, True = may attend.

    ProLong (Gao et al. 2024) and Dataset Decomposition (Pouransari et al. 2024) train without cross-document
    attention; a document's tokens see only earlier tokens of the same document.
    """
    same = document_ids[:, None, :, None] == document_ids[:, None, None, :]  # (b, 1, q, k)
    t = document_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=document_ids.device).tril()  # (q, k)
    return same & causal


def _labels(document: Document, start: int, stop: int, first_scored: bool) -> list[int]:
    """Labels of ``document.tokens[start:stop]``: the token where scored, IGNORE before ``loss_start`` and, when
    ``first_scored`` is False, at the piece's first token (it has no earlier token of its own document)."""
    tokens = document.tokens
    labels = [tokens[j] if j >= document.loss_start else IGNORE for j in range(start, stop)]
    if labels and not first_scored:
        labels[0] = IGNORE
    return labels


def _row(ids: list[int], labels: list[int], positions: list[int], segments: list[int], masked: bool) -> TrainBatch:
    """One packed row as a (1, t) batch; masked rows carry their document mask and ``document_ids``."""
    document_ids = torch.tensor([segments])
    return TrainBatch(
        input_ids=torch.tensor([ids]),
        labels=torch.tensor([labels]),
        position_ids=torch.tensor([positions]),
        attention_mask=document_mask(document_ids) if masked else None,
        extras={"document_ids": document_ids} if masked else {},
    )


def pack(
    documents: Iterable[Document], length: int, rng: np.random.Generator | None = None, *, masked: bool
) -> Iterator[TrainBatch]:
    """Rows of exactly ``length`` tokens, one (1, length) batch each, documents in the order given.

    ``masked=False``: concat-and-chunk, the standard baseline: documents are concatenated and cut every
    ``length`` tokens; positions run 0..length-1 per row and attention is plain causal across documents.
    ``masked=True``: packing with document masks (ProLong): a document piece attends only to itself
    (:func:`document_mask`), its positions restart at 0, and its first token is not scored (nothing of its own
    document precedes it). Either way a document longer than the room left in a row continues in the next row
    (masked: as a new piece starting at position 0), tokens before ``loss_start`` are never scored, and a last
    row the stream leaves incomplete is dropped. ``rng`` is unused: packing keeps the document order (recipes
    that shuffle do so before packing).
    """
    del rng
    if length < 2:
        raise LongreachError(f"training length must be at least 2 tokens; got {length}")
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    segments: list[int] = []
    for document in documents:
        start = 0
        while start < len(document.tokens):
            stop = min(len(document.tokens), start + length - len(ids))
            ids.extend(document.tokens[start:stop])
            labels.extend(_labels(document, start, stop, first_scored=not masked))
            first = 0 if masked else len(positions)
            positions.extend(range(first, first + stop - start))
            segments.extend([segments[-1] + 1 if segments else 0] * (stop - start))
            start = stop
            if len(ids) == length:
                yield _row(ids, labels, positions, segments, masked)
                ids, labels, positions, segments = [], [], [], []


def group_steps(
    batches: Iterable[TrainBatch], budget: int, size: Callable[[TrainBatch], int] = lambda batch: batch.tokens
) -> Iterator[list[TrainBatch]]:
    """Optimizer steps: consecutive batches until their ``size`` sums to at least ``budget`` (gradient
    accumulation); ``size`` is a batch's token count unless a recipe counts otherwise (LongPO counts pairs). A
    last incomplete step of a finite stream is kept."""
    step: list[TrainBatch] = []
    for batch in batches:
        step.append(batch)
        if sum(size(b) for b in step) >= budget:
            yield step
            step = []
    if step:
        yield step


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside ``model`` (a peft wrapper's base model, LoRA layers included)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def attention_input(model: Any, mask: torch.Tensor | None) -> torch.Tensor | None:
    """A bool (b, 1, q, k) mask in the form the model's attention implementation adds: bool for sdpa, an additive
    float mask (0 or the dtype's minimum) for eager. Other kernels (flash, flex) take no custom 4D mask."""
    if mask is None:
        return None
    implementation = getattr(causal_lm(model).config, "_attn_implementation", "eager")
    if implementation == "sdpa":
        return mask
    if implementation == "eager":
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    raise LongreachError(
        f"document masks need the sdpa or eager attention implementation; this model uses {implementation!r}"
    )


def _chunk_nll(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module, cap: float | None) -> torch.Tensor:
    """Summed cross entropy of one chunk: hidden (b, c, h), targets (b, c) -> () float32."""
    logits = head(hidden).float()  # (b, c, v)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
    )


@dataclass(frozen=True)
class Pieces:
    """A masked row as independent causal sequences (variable-length attention, as ProLong trains).

    ``shared``: tokens ``0 .. shared - 1`` that every later token sees (AnchorAttention's anchor; 0 for none);
    ``bounds``: the contiguous ``[start, stop)`` runs that cover ``shared .. t - 1`` in order, each attending
    causally to the shared tokens and itself only.
    """

    shared: int
    bounds: tuple[tuple[int, int], ...]


def independent_pieces(batch: TrainBatch) -> Pieces | None:
    """The pieces of a one-row batch whose mask is exactly "causal within each run of ``document_ids``, plus a
    leading run every token sees", else None (then the mask itself is used). The mask is rebuilt from the pieces
    and compared, so a mask of any other form is never read as pieces."""
    document_ids = batch.extras.get("document_ids")
    if batch.attention_mask is None or document_ids is None or document_ids.shape[0] != 1:
        return None
    ids = document_ids[0]
    t = ids.shape[0]
    starts = [0] + (torch.nonzero(ids[1:] != ids[:-1]).flatten() + 1).tolist()
    bounds = list(zip(starts, starts[1:] + [t], strict=True))
    mask = batch.attention_mask[0, 0]  # (q, k)
    shared = bounds[0][1] if len(bounds) > 1 and bool(mask[bounds[1][0] :, : bounds[0][1]].all()) else 0
    runs = torch.repeat_interleave(torch.arange(len(bounds)), torch.tensor([stop - start for start, stop in bounds]))
    if not _mask_of_runs(mask, runs.to(mask.device), shared):
        return None
    return Pieces(shared, tuple(bound for bound in bounds if bound[0] >= shared))


def _mask_of_runs(mask: torch.Tensor, runs: torch.Tensor, shared: int, block: int = 1024) -> bool:
    """Whether ``mask`` (q, k) is exactly causal attention within each run (``runs`` (t,): a run index per
    token) plus keys ``0 .. shared - 1`` for every query; compared ``block`` queries at a time, so a 32K row
    never builds a second (t, t) mask."""
    keys = torch.arange(mask.shape[-1], device=mask.device)
    for start in range(0, mask.shape[0], block):
        queries = keys[start : start + block, None]  # (block, 1)
        implied = ((runs[queries] == runs[None, :]) | (keys < shared)[None, :]) & (keys[None, :] <= queries)
        if not torch.equal(implied, mask[start : start + block]):
            return False
    return True


def _causal_hidden_states(lm: Any, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states (b, t, h) under plain causal attention over all of ``input_ids`` (b, t), whatever
    ``position_ids`` (b, t) hold. The all-ones padding mask is needed: without any mask and without a cache,
    transformers reads every step of ``position_ids`` other than +1 as the start of another packed sequence and
    masks attention across it, which would cut an E2-LLM row at its offset and a CLEX row at every sampled gap."""
    ones = torch.ones_like(input_ids)
    return lm.model(
        input_ids=input_ids, position_ids=position_ids, attention_mask=ones, use_cache=False
    ).last_hidden_state


def hidden_states(model: Any, batch: TrainBatch) -> torch.Tensor:
    """The decoder's final hidden states (b, t, h) of ``batch`` at its positions, under its attention mask.

    A document-masked row (:func:`independent_pieces`) runs piece by piece under plain causal attention:
    the same result as its (t, t) mask (tested), without the attention between pieces that the mask discards
    (ProLong, Gao et al. 2024, trains with variable-length attention for this reason).
    """
    lm = causal_lm(model)
    if batch.attention_mask is None:
        return _causal_hidden_states(lm, batch.input_ids, batch.position_ids)
    pieces = independent_pieces(batch)
    if pieces is None:
        mask = attention_input(lm, batch.attention_mask)
        return lm.model(
            input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask, use_cache=False
        ).last_hidden_state
    parts = []
    for i, (start, stop) in enumerate(pieces.bounds):
        index = torch.cat([torch.arange(pieces.shared), torch.arange(start, stop)]).to(batch.input_ids.device)
        out = _causal_hidden_states(lm, batch.input_ids[:, index], batch.position_ids[:, index])
        parts.append(out if i == 0 else out[:, pieces.shared :])  # out: (1, shared + stop - start, h)
    return torch.cat(parts, dim=1)


def causal_lm_loss(model: Any, batch: TrainBatch, hidden: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross entropy (float32, a scalar) over the scored labels of ``batch``.

    Beyond ``LOGIT_CHUNK`` positions, logits are computed that many positions at a time under activation
    checkpointing, so a long row's (t, v) logits never exist at once (ProLong, Gao et al. 2024: logits in blocks).
    ``hidden`` (b, t, h): hidden states already computed (a recipe that changes the forward), else
    :func:`hidden_states` computes them.
    """
    hidden = hidden_states(model, batch) if hidden is None else hidden
    lm = causal_lm(model)
    head, cap = lm.get_output_embeddings(), getattr(text_config(lm.config), "final_logit_softcapping", None)
    targets = batch.labels[:, 1:]  # position j - 1 predicts token j
    hidden = hidden[:, :-1]
    scored = int((targets != IGNORE).sum())
    if scored == 0:
        return hidden.sum() * 0.0  # nothing to learn here, but keep the graph
    if hidden.shape[1] <= LOGIT_CHUNK:  # one chunk: its logits are small, recomputing them would only cost time
        return _chunk_nll(hidden, targets, head, cap) / scored
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[1], LOGIT_CHUNK):
        part, wanted = hidden[:, start : start + LOGIT_CHUNK], targets[:, start : start + LOGIT_CHUNK]
        if bool((wanted != IGNORE).any()):
            total = total + checkpoint(_chunk_nll, part, wanted, head, cap, use_reentrant=False)
    return total / scored


@dataclass(frozen=True)
class Recipe:
    """Base class: plain continued training (concat-and-chunk, causal LM loss, no model change).

    Subclasses are frozen dataclasses whose fields are knobs (``field(metadata={"help": ...})``), validated in
    ``__post_init__`` with :func:`longreach.params.require`. Class attributes: ``name`` (registry name),
    ``summary`` (one line for ``longreach recipes``), ``paper`` (citation), ``example`` (a spec that engages
    the recipe on tiny-llama; default the bare name), ``example_data`` (a ``--data`` spec for that run; default
    ``tasks:passkey``, plus ``short:passkey`` when :meth:`mix` asks for short documents).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    example: ClassVar[str] = ""
    example_data: ClassVar[str] = ""

    @property
    def spec(self) -> str:
        """The canonical spec: the name plus every knob that differs from its default."""
        return params.canonical(self.name, self)

    def mix(self) -> dict[str, float] | None:
        """Token shares by :attr:`Document.kind` the data should arrive in (``{"long": 0.6, "short": 0.4}``);
        None takes the data spec's sources as given (interleaved with equal token shares)."""
        return None

    def prepare(self, model: Any, length: int) -> None:
        """Change ``model`` in place before training (and before LoRA is added): RoPE config, added modules.
        ``length`` is the training length. The default changes nothing."""

    def batches(self, documents: Iterator[Document], length: int, rng: np.random.Generator) -> Iterator[TrainBatch]:
        """Forward-pass batches from the document stream; the default is concat-and-chunk (:func:`pack`).
        Randomness comes from ``rng`` only (never torch's global RNG): a resumed run replays this stream to skip
        what its checkpoint covers, and must draw the same batches."""
        return pack(documents, length, rng, masked=False)

    def steps(
        self, documents: Iterator[Document], length: int, batch_tokens: int, rng: np.random.Generator
    ) -> Iterator[list[TrainBatch]]:
        """Optimizer steps of about ``batch_tokens`` tokens each: :meth:`batches` grouped by :func:`group_steps`.
        A recipe overrides this only when a step's composition matters (one bucket per step)."""
        return group_steps(self.batches(documents, length, rng), batch_tokens)

    def loss(self, model: Any, batch: TrainBatch) -> torch.Tensor:
        """The scalar to minimise on one batch; the default is :func:`causal_lm_loss`."""
        return causal_lm_loss(model, batch)

    def trainable(self, model: Any) -> list[torch.nn.Parameter]:
        """Parameters the recipe trains besides LoRA (a module it added in :meth:`prepare`); the loop unfreezes,
        optimises and checkpoints them. The default: none."""
        return []

    def finish(self, model: Any, out: Path) -> None:
        """Write what the saved model folder ``out`` needs beyond ``save_pretrained`` (extra files, config keys).
        ``model`` is the merged transformers model. The default writes nothing."""


def recipe_from_spec(spec: str) -> Recipe:
    """``"abf:theta=500000"`` -> the validated recipe; unknown names and knobs fail with the valid options."""
    return params.from_spec(RECIPES, spec)


def recipe_rows() -> list[list[str]]:
    """(name, description, paper, knobs (default)) of every registered recipe, for ``longreach recipes`` and the
    README table."""
    rows = []
    for name, cls in RECIPES.items():
        knobs = ", ".join(f"{n}={d}" for n, d, _ in params.describe_fields(cls)) or "-"
        rows.append([name, cls.summary, cls.paper, knobs])
    return rows
