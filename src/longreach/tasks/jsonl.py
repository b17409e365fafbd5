"""``jsonl:PATH``: a user's own instances, one JSON object a line with ``context``, ``question``, ``answers``.

Optional per line: ``answer_prefix`` (the text the model continues from, e.g. ``" The answer is"``; in the
``chat`` prompt format it opens the assistant turn), ``match`` (``any``: an alias suffices, the default;
``all``: every item is needed), ``max_new_tokens``, ``stop`` (strings that end the answer), ``id``. Instance
``index`` is line ``index`` (blank lines skipped). A prompt longer than the requested length, as formatted (chat
template included), has the middle of its context cut so it is exactly that long (LongBench's policy; recorded
as ``truncated_tokens``); a shorter one is used as is (``realized_tokens`` says so).

Files written by ``longreach generate`` (one :func:`instance_line` per instance) read back into the same
prompts and the same scores: such a line names its family's ``scorer`` (the task spec, e.g. ``tsort`` or
``needle:num_keys=4``) and carries the generator's ``meta`` that the family's ``score`` reads.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from longreach import params, tokens
from longreach.errors import LongreachError
from longreach.prompts import RAW, PromptFormat
from longreach.tasks import scoring
from longreach.tasks.base import Sample, Task, parse_task, register_family
from longreach.tasks.fitting import LengthFitError

CANARY = "longreach-canary 5f0c2a8e-6b7d-4f61-9a43-2d1e7c9b8a10: do not train on this text"
_PARTS = ("context", "question", "answer_prefix", "answers", "stop", "meta")
_TOKEN_FACTS = ("needle_token_offsets",)  # token indices of the exporting tokenizer and format: not carried


def instance_line(sample: Sample, spec: str, **coordinates: Any) -> dict[str, Any]:
    """One line of an exported instance file: ``jsonl:FILE`` reads it back into the same prompt and scores it
    with the family's own rule (``scorer``: the task spec; the family's ``score`` reads ``meta``).

    ``coordinates`` (context_length, depth, index, seed, model, ...) are written as given after ``task``;
    a line carries the canary string so leaks of these files into training data can be detected.
    """
    scorer = sample.meta.get("scorer") if sample.task == JsonlTask.family else spec
    return {
        "task": spec,
        **coordinates,
        "context": sample.context,
        "question": sample.question,
        "answer_prefix": sample.answer_prefix,
        "answers": list(sample.answers),
        **({"scorer": scorer} if scorer else {}),
        "match": sample.meta.get("match", "all"),
        "max_new_tokens": sample.max_new_tokens,
        "stop": list(sample.stop),
        "meta": sample.meta,
        "canary": CANARY,
    }


@functools.cache
def read_instances(path: str) -> tuple[dict[str, Any], ...]:
    """Parse and validate every line; the first bad line raises with its line number."""
    file = Path(path)
    if not file.is_file():
        raise LongreachError(f"jsonl: no such file {path!r}")
    rows = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                rows.append(_parse_line(line, f"{path} line {number}"))
    if not rows:
        raise LongreachError(f"jsonl: {path} holds no instances")
    return tuple(rows)


def _parse_line(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise LongreachError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(row, dict):
        raise LongreachError(f"{where}: expected a JSON object with context, question, answers")
    for key in ("context", "question"):
        if not isinstance(row.get(key), str):
            raise LongreachError(f"{where}: {key!r} must be a string")
    if not isinstance(row.get("answer_prefix", ""), str):
        raise LongreachError(f"{where}: 'answer_prefix' must be a string; got {row['answer_prefix']!r}")
    answers = row.get("answers")
    if isinstance(answers, str):
        row["answers"] = [answers]
    elif not (isinstance(answers, list) and answers and all(isinstance(a, str) for a in answers)):
        raise LongreachError(f"{where}: 'answers' must be a string or a non-empty list of strings")
    if row.get("match", "any") not in ("any", "all"):
        raise LongreachError(f"{where}: 'match' must be 'any' or 'all'; got {row['match']!r}")
    stop = row.get("stop", [])
    if not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)):
        raise LongreachError(f"{where}: 'stop' must be a list of non-empty strings; got {stop!r}")
    if not isinstance(row.get("meta", {}), dict):
        raise LongreachError(f"{where}: 'meta' must be a JSON object; got {row['meta']!r}")
    if "scorer" in row:
        _check_scorer(row["scorer"], where)
    return row


def _check_scorer(spec: Any, where: str) -> None:
    if not isinstance(spec, str):
        raise LongreachError(f"{where}: 'scorer' must be a task spec string such as 'tsort'; got {spec!r}")
    if params.split_spec(spec)[0] == JsonlTask.family:
        raise LongreachError(f"{where}: scorer {spec!r} must name a generated task (see `longreach tasks`)")
    try:
        _scorer(spec)
    except LongreachError as exc:
        raise LongreachError(f"{where}: scorer {spec!r}: {exc}") from None


@functools.cache
def _scorer(spec: str) -> Task:
    """The task whose ``score`` a line's ``scorer`` names."""
    return parse_task(spec).task


def join(context: str, question: str) -> tuple[str, str]:
    """Context and question as the model reads them: a blank line between them unless one has a break."""
    if context and question and not context[-1].isspace() and not question[0].isspace():
        question = "\n\n" + question
    return context, question


@register_family
@dataclass(frozen=True)
class JsonlTask(Task):
    """Instances from a JSONL file."""

    path: str = field(default="", metadata={"help": "the JSONL file (one instance a line)"})
    max_new_tokens: int = field(default=32, metadata={"help": "generation budget when a line sets none"})

    family: ClassVar[str] = "jsonl"
    summary: ClassVar[str] = "your own instances: jsonl:PATH, lines with context, question, answers"
    uses_depth: ClassVar[bool] = False
    generated: ClassVar[bool] = False
    diffusion: ClassVar[None] = None  # the user's own instances: not ours to place on the grid
    scope: ClassVar[None] = None  # likewise

    def __post_init__(self) -> None:
        if not self.path:
            raise LongreachError("jsonl: give a file, e.g. jsonl:data.jsonl")
        read_instances(self.path)

    def num_instances(self) -> int | None:
        return len(read_instances(self.path))

    def generate(
        self, tokenizer: Any, context_length: int, depth: float, seed: int, index: int, frame: PromptFormat = RAW
    ) -> Sample:
        rows = read_instances(self.path)
        if not 0 <= index < len(rows):
            raise LongreachError(f"jsonl: {self.path} has {len(rows)} instances; index {index} is out of range")
        row = rows[index]
        context, question = join(row["context"], row["question"])
        answer_prefix = row.get("answer_prefix", "")

        def render(text: str) -> str:
            return frame.render(text, question, answer_prefix)

        context, cut = fit_middle(tokenizer, context, render, context_length)
        meta = {k: v for k, v in row.get("meta", {}).items() if k not in _TOKEN_FACTS}
        meta.update((k, v) for k, v in row.items() if k not in _PARTS)
        sample = Sample(
            task="jsonl",
            context=context,
            question=question,
            answers=tuple(row["answers"]),
            max_new_tokens=int(row.get("max_new_tokens", self.max_new_tokens)),
            stop=tuple(row.get("stop", ())),
            meta=meta,
            answer_prefix=answer_prefix,
            frame=frame,
        )
        meta.update(
            realized_tokens=tokens.count(tokenizer, sample.prompt),
            truncated_tokens=cut,
            match=row.get("match", "any"),
            line_index=index,
        )
        return sample

    def score(self, sample: Sample, prediction: str) -> float:
        """The named family's own rule when the line has a ``scorer``; else match_all / match_any by ``match``."""
        if sample.meta.get("scorer"):
            return _scorer(sample.meta["scorer"]).score(sample, prediction)
        if sample.meta.get("match") == "all":
            return scoring.match_all(sample.answers, prediction)
        return scoring.match_any(sample.answers, prediction)


def fit_middle(tokenizer: Any, context: str, render: Callable[[str], str], limit: int) -> tuple[str, int]:
    """Cut tokens from the middle of ``context`` until the prompt ``render(context)`` has ``limit`` tokens (at most);
    returns the context and the number of tokens cut (LongBench's policy: the start and the end are kept)."""
    total = tokens.count(tokenizer, render(context))
    if total <= limit:
        return context, 0
    ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    cut, best = total - limit, None
    for _ in range(16):
        keep = len(ids) - cut
        if keep <= 0:
            break
        shorter = tokenizer.decode(ids[: keep // 2]) + tokenizer.decode(ids[len(ids) - (keep - keep // 2) :])
        excess = tokens.count(tokenizer, render(shorter)) - limit
        if excess <= 0:
            best = (shorter, cut)
        if excess == 0:
            break
        cut += excess
    if best is None:
        raise LengthFitError(f"the question alone does not fit in {limit} tokens")
    return best
