"""Training data from local sources only: ``--data`` specs -> an endless, deterministic stream of :class:`Document`.

A data spec is one or more sources joined by ``+``:

- ``tasks:niah_multikey_1,vt,bio_multi`` -- samples of registered task families (``longreach tasks``; a task may
  carry knobs, ``needle:num_keys=4``) generated at the training length, round robin over the tasks. A sample is
  its prompt (in the model's prompt format, ``--prompt auto``) followed by its reference answer and EOS, exactly
  ``length`` tokens, scored from the answer on (``loss_start``). Seeds are disjoint from evaluation: sample ``i``
  uses seed ``TRAIN_SEED_OFFSET + seed`` (10^9 + ``--seed``) and index ``i``, so no evaluation run with a seed
  below 10^9 ever sees a training instance (task RNG streams hash the seed). The needle depth of sample ``i`` is
  drawn uniformly in [0, 1] from its own stream.
- ``text:DIR`` -- every ``.txt`` and ``.md`` file under DIR (recursively) as one long document, and every line of
  every ``.jsonl`` file as one document: its ``text`` field, or a ``prompt`` and ``response`` pair (the prompt in
  the model's prompt format, scored from the response on). Each document is tokenized with the tokenizer's own
  special tokens plus EOS. Files are read in a shuffled order, reshuffled every pass. Point it at your own corpus:
  a folder of plain text (books, code turned into ``.txt``, docs) or a ``.jsonl`` of ``{"text": ...}`` records.
  Keep the text you measure perplexity on out of that folder.
- ``short:passkey,vt`` or ``short:DIR`` -- short instruction data for ProLong's mix (``kind="short"``): task samples
  at 256, 512 or 1024 tokens (never above the training length; a task whose prompt needs more gets the next
  power of two that fits), or a folder read as ``text:`` reads it (a ``.jsonl`` of prompt/response pairs is
  instruction data).

Sources interleave by tokens: the next document comes from the source furthest below its token share. Shares are
equal unless the recipe asks for shares by kind (:meth:`longreach.train.recipe.Recipe.mix`; ProLong: 60% long,
40% short), which are split equally among the sources of each kind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longreach.errors import LongreachError
from longreach.prompts import PromptFormat, resolve_format
from longreach.tasks import ParsedTask, parse_tasks
from longreach.tasks.fitting import LengthFitError
from longreach.tasks.rng import stream
from longreach.tokens import encode
from longreach.train.recipe import Document

TRAIN_SEED_OFFSET = 10**9  # training samples use seed 10^9 + --seed: disjoint from every evaluation seed below 10^9
SHORT_LENGTHS = (256, 512, 1024)  # lengths of short task samples (ProLong's short instruction data)
TEXT_SUFFIXES = (".txt", ".md", ".jsonl")
SOURCE_KINDS = ("tasks", "text", "short")


@dataclass(frozen=True)
class Source:
    """One ``kind:argument`` item of a data spec: ``tasks`` (task list), ``text`` (folder) or ``short`` (either)."""

    kind: str
    tasks: tuple[ParsedTask, ...] = ()
    folder: Path | None = None

    @property
    def document_kind(self) -> str:
        return "short" if self.kind == "short" else "long"


def parse_source(text: str, check_folders: bool = True) -> Source:
    """``"tasks:vt,passkey"`` / ``"text:DIR"`` / ``"short:passkey"`` / ``"short:DIR"`` -> a validated source
    (``check_folders=False``: a folder need not exist yet, as in a study file read on another machine)."""
    kind, _, argument = text.strip().partition(":")
    if kind not in SOURCE_KINDS:
        raise LongreachError(
            f"unknown data source {kind!r} in {text!r}; valid: tasks:TASKS, text:DIR, short:TASKS or short:DIR"
        )
    if not argument:
        raise LongreachError(f"data source {kind!r} needs an argument, e.g. {kind}:{'DIR' if kind == 'text' else 'vt'}")
    folder = Path(argument).expanduser()
    if kind == "text" or (kind == "short" and (folder.is_dir() or (not check_folders and "/" in argument))):
        return Source(kind, folder=_checked_folder(folder) if check_folders else folder)
    tasks = tuple(parse_tasks(argument))
    for task in tasks:
        if not task.task.generated:
            raise LongreachError(
                f"--data {kind}: {task.spec} reads your own files, not a generated family; use text:DIR for a corpus"
            )
    return Source(kind, tasks=tasks)


def parse_data(spec: str, check_folders: bool = True) -> tuple[Source, ...]:
    """A whole ``--data`` spec (sources joined by ``+``), validated without a tokenizer (cheap, before loading)."""
    parts = spec.split("+")
    if any(not part.strip() for part in parts):
        raise LongreachError(f"empty data source in {spec!r}; join sources with a single '+'")
    return tuple(parse_source(part, check_folders) for part in parts)


def _checked_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise LongreachError(f"text: no such folder {folder}; give a folder of .txt, .md or .jsonl files")
    if not any(_text_files(folder)):
        raise LongreachError(f"text: {folder} holds no .txt, .md or .jsonl file")
    return folder


def _text_files(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES)


def _records(path: Path) -> Iterator[tuple[str, str]]:
    """(prompt, text) pairs of a file: ("", whole text) for .txt/.md; one per jsonl line (``text`` or
    ``prompt``/``response``)."""
    if path.suffix != ".jsonl":
        yield "", path.read_text(encoding="utf-8", errors="replace")
        return
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LongreachError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            yield "", record["text"]
        elif isinstance(record, dict) and isinstance(record.get("prompt"), str) and "response" in record:
            yield record["prompt"], str(record["response"])
        else:
            raise LongreachError(f"{path}:{number}: a record needs a 'text' field or 'prompt' and 'response'")


def _eos(tokenizer: Any) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def _text_document(tokenizer: Any, frame: PromptFormat, prompt: str, text: str, kind: str) -> Document:
    """A plain text (prompt "") or an instruction pair (prompt in ``frame``, scored from the response)."""
    if not prompt:
        return Document(tuple(encode(tokenizer, text) + _eos(tokenizer)), 0, kind)
    head = encode(tokenizer, frame.render(prompt, "", ""))
    answer = tokenizer(text, add_special_tokens=False)["input_ids"] + _eos(tokenizer)
    return Document(tuple(head + answer), len(head), kind)


def text_documents(
    folder: Path, tokenizer: Any, seed: int, frame: PromptFormat, kind: str = "long"
) -> Iterator[Document]:
    """Endless passes over the folder's documents, each pass in its own shuffled order (numpy, from (seed, pass))."""
    records = [record for path in _text_files(folder) for record in _records(path)]
    if not records:
        raise LongreachError(f"text: {folder} holds no text")
    cache: dict[int, tuple[np.ndarray, int]] = {}  # tokenized once, kept as int32 (4 bytes a token)
    for epoch in range(10**12):
        for index in map(int, np.random.default_rng([seed, epoch]).permutation(len(records))):
            if index not in cache:
                document = _text_document(tokenizer, frame, *records[index], kind)
                cache[index] = (np.asarray(document.tokens, dtype=np.int32), document.loss_start)
            tokens, loss_start = cache[index]
            yield Document(tuple(tokens.tolist()), loss_start, kind)


def task_document(
    task: ParsedTask, tokenizer: Any, length: int, seed: int, index: int, frame: PromptFormat, kind: str = "long"
) -> Document:
    """Sample ``index`` of ``task`` as prompt + reference answer + EOS, exactly ``length`` tokens.

    The prompt is generated at ``length`` minus the answer's tokens (the probe, and so the answer, does not depend
    on the length); when the answer still moves, a few leading pad tokens (never scored) make up the difference.
    """
    train_seed = TRAIN_SEED_OFFSET + seed
    depth = stream(train_seed, task.spec, "train-depth", index).random()
    answer: list[int] = []
    best: Document | None = None
    for _ in range(3):
        context = length - len(answer)
        sample = task.task.generate(tokenizer, context, depth, train_seed, index, frame)
        prompt = encode(tokenizer, sample.prompt)
        answer = tokenizer(task.task.reference_answer(sample), add_special_tokens=False)["input_ids"] + _eos(tokenizer)
        if len(prompt) + len(answer) <= length:
            best = Document(tuple(prompt + answer), len(prompt), kind)
            if len(best.tokens) == length:
                return best
    if best is None:
        raise LengthFitError(f"{task.spec}: no sample of {length} tokens with its answer")
    pad = length - len(best.tokens)
    filler = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Document((filler,) * pad + best.tokens, best.loss_start + pad, kind)


def _short_length(task: ParsedTask, tokenizer: Any, length: int, seed: int, index: int, frame: PromptFormat) -> int:
    """The length of short sample ``index``: one of SHORT_LENGTHS (at most ``length``), drawn from its stream."""
    choices = [n for n in SHORT_LENGTHS if n <= length] or [length]
    return choices[stream(TRAIN_SEED_OFFSET + seed, task.spec, "train-short", index).randrange(len(choices))]


def task_documents(
    tasks: tuple[ParsedTask, ...], tokenizer: Any, length: int, seed: int, frame: PromptFormat, short: bool
) -> Iterator[Document]:
    """Endless samples, round robin over ``tasks``: at ``length`` (long) or at a short length (short)."""
    kind = "short" if short else "long"
    for index in range(10**12):
        for task in tasks:
            size = _short_length(task, tokenizer, length, seed, index, frame) if short else length
            while True:
                try:
                    yield task_document(task, tokenizer, size, seed, index, frame, kind)
                    break
                except LengthFitError as exc:
                    if size >= length:
                        raise LongreachError(f"--data: task {task.spec} does not fit {size} tokens: {exc}") from None
                    size = min(size * 2, length)  # its fixed part needs more room: the next power of two


def source_documents(source: Source, tokenizer: Any, length: int, seed: int, frame: PromptFormat) -> Iterator[Document]:
    """The endless document stream of one source."""
    if source.folder is not None:
        return text_documents(source.folder, tokenizer, seed, frame, source.document_kind)
    return task_documents(source.tasks, tokenizer, length, seed, frame, short=source.kind == "short")


def source_shares(sources: tuple[Source, ...], mix: dict[str, float] | None) -> list[float]:
    """Token share of each source: equal, or the recipe's share of its kind split among that kind's sources."""
    if mix is None:
        return [1.0 / len(sources)] * len(sources)
    kinds = [s.document_kind for s in sources]
    for kind, share in mix.items():
        if share > 0 and kind not in kinds:
            example = "short:passkey,vt" if kind == "short" else "text:DIR"
            raise LongreachError(
                f"this recipe trains on {share:.0%} {kind} documents but --data has no {kind} source; "
                f"add one, e.g. --data {'+'.join(s.kind + ':...' for s in sources)}+{example}"
            )
    unused = sorted({kind for kind in kinds if mix.get(kind, 0) <= 0})
    if unused:
        raise LongreachError(f"this recipe uses no {' or '.join(unused)} documents; drop those sources from --data")
    return [mix[kind] / kinds.count(kind) for kind in kinds]


def interleave(streams: list[Iterator[Document]], shares: list[float]) -> Iterator[Document]:
    """Documents from ``streams``, each next one from the stream furthest below its token share (ties: first)."""
    emitted = [0] * len(streams)
    while True:
        pick = min(range(len(streams)), key=lambda i: (emitted[i] / shares[i], i))
        document = next(streams[pick])
        emitted[pick] += len(document.tokens)
        yield document


def open_documents(
    spec: str,
    tokenizer: Any,
    length: int,
    seed: int,
    *,
    mix: dict[str, float] | None = None,
    prompt: str = "auto",
) -> Iterator[Document]:
    """The endless, deterministic document stream of ``spec`` for a tokenizer and training length.

    Equal arguments give equal streams, so a resumed run reproduces its data order by skipping what it consumed.
    ``mix``: the recipe's token shares by kind; ``prompt``: auto | raw | chat (task and instruction prompts).
    """
    sources = parse_data(spec)
    shares = source_shares(sources, mix)
    frame = resolve_format(tokenizer, prompt)
    streams = [source_documents(s, tokenizer, length, seed + i, frame) for i, s in enumerate(sources)]
    return interleave(streams, shares)
