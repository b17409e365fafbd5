"""Released benchmark files, read from a folder the user points to (``longbench:narrativeqa:data=DIR``).

Nothing is downloaded: the families of LongBench, LongBench v2, L-Eval, LV-Eval and InfiniteBench find their
file in ``data`` and check every line (or item) against the benchmark's released schema when the task is
parsed. A missing folder or file, or a bad line, is one :class:`LongreachError` naming the file expected, the
line and field at fault and where the benchmark publishes its data.

Length policy: ``context_length`` is a budget. A prompt longer than it, as formatted (chat template included),
has the middle of its context cut until it fits (exactly, or a token short where tokens merge at the cut;
LongBench's policy: keep the start and the end; here
the question after the document is always kept whole), the cut recorded as ``truncated_tokens``. A shorter
prompt is used as is and its length recorded as ``realized_tokens``: released instances are never padded, so
study length through ``realized_tokens`` (or the benchmark's own ``length`` field, kept in the meta).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from longreach import tokens
from longreach.errors import LongreachError
from longreach.prompts import RAW, PromptFormat
from longreach.tasks.base import Sample, Task
from longreach.tasks.jsonl import fit_middle


@dataclass(frozen=True)
class Kind:
    """What a field of the released schema must hold: a description for the error and a check (``optional``:
    the field may be absent)."""

    description: str
    check: Callable[[Any], bool]
    optional: bool = False


TEXT = Kind("a string", lambda v: isinstance(v, str))
TEXTS = Kind("a non-empty list of strings", lambda v: isinstance(v, list) and bool(v) and all(map(TEXT.check, v)))
LIST = Kind("a list", lambda v: isinstance(v, list))
ANY = Kind("present", lambda v: True)
OPTIONAL_TEXT = Kind("a string or null", lambda v: v is None or isinstance(v, str), optional=True)
# The fields of LongBench's released rows, which LV-Eval's rows share (each adds its own after them).
LONGBENCH_FIELDS = (
    ("input", TEXT),
    ("context", TEXT),
    ("answers", TEXTS),
    ("length", ANY),
    ("dataset", TEXT),
    ("language", TEXT),
)


@dataclass(frozen=True)
class Source:
    """A benchmark's name and where it publishes its data (named in every data error)."""

    benchmark: str
    url: str

    def fail(self, message: str) -> LongreachError:
        return LongreachError(f"{self.benchmark}: {message} ({self.benchmark} publishes its data at {self.url})")


@dataclass(frozen=True)
class Instance:
    """One released instance as the model reads it: prompt parts (see :class:`Sample`), golds and meta."""

    context: str
    question: str
    answers: tuple[str, ...]
    max_new_tokens: int
    answer_prefix: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def find_file(source: Source, folder: str, names: tuple[str, ...]) -> Path:
    """The first of ``names`` (paths relative to ``folder``) that exists."""
    if not folder:
        raise source.fail(f"give the folder holding {names[0]} with data=DIR")
    if not Path(folder).is_dir():
        raise source.fail(f"no such folder {folder!r} (expected {names[0]} in it)")
    for name in names:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    raise source.fail(f"expected the file {Path(folder) / names[0]}")


@functools.cache
def read_rows(source: Source, path: Path, schema: tuple[tuple[str, Kind], ...]) -> tuple[tuple[str, dict], ...]:
    """Every row of a JSONL file (``.json``: one JSON array), each checked against ``schema``, with where it is
    (``FILE line N``, ``FILE item N``) for errors found later."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        items = _array(source, path, text)
    else:
        items = [(f"{path} line {n}", _line(source, f"{path} line {n}", line)) for n, line in _lines(text)]
    if not items:
        raise source.fail(f"{path} holds no instances")
    for where, row in items:
        _check(source, where, row, schema)
    return tuple(items)


def _lines(text: str) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _line(source: Source, where: str, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise source.fail(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None


def _array(source: Source, path: Path, text: str) -> list[tuple[str, Any]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise source.fail(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(items, list):
        raise source.fail(f"{path}: expected a JSON array of instances")
    return [(f"{path} item {n}", item) for n, item in enumerate(items, start=1)]


def _check(source: Source, where: str, row: Any, schema: tuple[tuple[str, Kind], ...]) -> None:
    if not isinstance(row, dict):
        raise source.fail(f"{where}: expected a JSON object with {', '.join(name for name, _ in schema)}")
    for name, kind in schema:
        if name not in row and kind.optional:
            continue
        if name not in row:
            raise source.fail(f"{where}: field {name!r} is missing")
        if not kind.check(row[name]):
            raise source.fail(f"{where}: field {name!r} must be {kind.description}; got {_short(row[name])}")


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class ReleasedTask(Task):
    """Base of the released-benchmark families: instances from a file, cut to the budget, scored officially.

    A family sets ``source`` and defines ``instances()`` (all instances, read and checked once),
    ``instance(row)`` -> :class:`Instance` and ``score``. Its knobs include ``data`` (the folder) and
    ``max_new_tokens`` (0: the benchmark's own budget for the subset).
    """

    source: ClassVar[Source]
    uses_depth: ClassVar[bool] = False
    generated: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.instances()  # a missing folder or a bad line fails when the task is parsed

    def instances(self) -> tuple[Instance, ...]:
        raise NotImplementedError

    def num_instances(self) -> int | None:
        return len(self.instances())

    def budget(self, own: int) -> int:
        """The generation budget: the ``max_new_tokens`` knob when set, else the benchmark's own."""
        return getattr(self, "max_new_tokens", 0) or own

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        instances = self.instances()
        if not 0 <= index < len(instances):
            raise LongreachError(f"{self.family}: {len(instances)} instances; index {index} is out of range")
        item = instances[index]

        def render(text: str) -> str:
            return frame.render(text, item.question, item.answer_prefix)

        context, cut = fit_middle(tokenizer, item.context, render, context_length)
        sample = Sample(
            task=self.family,
            context=context,
            question=item.question,
            answers=item.answers,
            max_new_tokens=item.max_new_tokens,
            meta=dict(item.meta),
            answer_prefix=item.answer_prefix,
            frame=frame,
        )
        sample.meta.update(realized_tokens=tokens.count(tokenizer, sample.prompt), truncated_tokens=cut, instance=index)
        return sample

    def reference_answer(self, sample: Sample) -> str:
        return sample.answers[0]


def templated(row: dict, template: str, max_new_tokens: int, meta: dict[str, Any]) -> Instance:
    """The instance of a row in LongBench's format (:data:`LONGBENCH_FIELDS`) under a benchmark's prompt template
    ``...{context}...{input}...``: the context part is the text up to and including the document, the question
    part the rest."""
    head, tail = template.split("{context}", 1)
    context, question = head.format(input=row["input"]) + row["context"], tail.format(input=row["input"])
    return Instance(context, question, tuple(row["answers"]), max_new_tokens, meta=meta)
