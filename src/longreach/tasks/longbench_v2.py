"""LongBench v2 (Bai et al. 2025, "LongBench v2: Towards Deeper Understanding and Reasoning on Realistic
Long-context Multitasks", arXiv 2412.15204): four-choice questions over long documents.

``longbench_v2:data=DIR`` reads the released ``DIR/data.json`` (a JSON array; ``data.jsonl``, one object a
line, is read too) with fields ``_id``, ``domain``, ``sub_domain``, ``difficulty``, ``length``, ``question``,
``choice_A`` .. ``choice_D``, ``answer``, ``context``. ``difficulty`` and ``length`` knobs keep one slice (easy
/ hard; short / medium / long). The prompt is LongBench v2's ``0shot.txt`` (no chain of thought), the budget
its 128 tokens, and the score 1 when the letter read from ``The correct answer is (X)`` is the gold one.
Random baseline: one of four letters, 0.25. See :mod:`longreach.tasks.released` for the length policy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from longreach.tasks import metrics
from longreach.tasks.base import Sample, register_family
from longreach.tasks.released import TEXT, Instance, Kind, ReleasedTask, Source, find_file, read_rows

LETTERS = ("A", "B", "C", "D")
SOURCE = Source("LongBench v2", "https://huggingface.co/datasets/THUDM/LongBench-v2/resolve/main/data.json")
_LETTER = Kind("one of A, B, C, D", lambda v: v in LETTERS)
SCHEMA = (
    ("_id", TEXT),
    ("domain", TEXT),
    ("sub_domain", TEXT),
    ("difficulty", TEXT),
    ("length", TEXT),
    ("question", TEXT),
    *((f"choice_{letter}", TEXT) for letter in LETTERS),
    ("answer", _LETTER),
    ("context", TEXT),
)
_HEAD = "Please read the following text and answer the question below.\n\n<text>\n"
_QUESTION = "\n</text>\n\nWhat is the correct answer to this question: {question}\nChoices:\n{choices}\n\n"
_FORMAT = 'Format your response as follows: "The correct answer is (insert answer here)".'


@register_family
@dataclass(frozen=True)
class LongBenchV2(ReleasedTask):
    """LongBench v2 multiple choice from the released data.json."""

    data: str = field(default="", metadata={"help": "folder holding data.json (LongBench v2's release)"})
    difficulty: Literal["all", "easy", "hard"] = field(default="all", metadata={"help": "all | easy | hard"})
    length: Literal["all", "short", "medium", "long"] = field(
        default="all", metadata={"help": "all | short | medium | long"}
    )
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget; 0: LongBench v2's 128"})

    family: ClassVar[str] = "longbench_v2"
    summary: ClassVar[str] = "LongBench v2 released data.json: four-choice questions, longbench_v2:data=DIR"
    source: ClassVar[Source] = SOURCE

    def instances(self) -> tuple[Instance, ...]:
        items = _instances(self.data, self.difficulty, self.length, self.budget(128))
        if not items:
            raise SOURCE.fail(f"no instance in {self.data} has difficulty={self.difficulty} and length={self.length}")
        return items

    def score(self, sample: Sample, prediction: str) -> float:
        return float(metrics.correct_answer_letter(prediction) == sample.answers[0])

    def reference_answer(self, sample: Sample) -> str:
        return f" The correct answer is ({sample.answers[0]})."


@functools.cache
def _instances(data: str, difficulty: str, length: str, max_new_tokens: int) -> tuple[Instance, ...]:
    path = find_file(SOURCE, data, ("data.json", "data.jsonl"))
    rows = read_rows(SOURCE, path, SCHEMA)
    kept = [r for _, r in rows if difficulty in ("all", r["difficulty"]) and length in ("all", r["length"])]
    return tuple(_instance(row, max_new_tokens) for row in kept)


def _instance(row: dict, max_new_tokens: int) -> Instance:
    choices = "\n".join(f"({letter}) {row[f'choice_{letter}'].strip()}" for letter in LETTERS)
    question = _QUESTION.format(question=row["question"].strip(), choices=choices) + _FORMAT
    meta = {"id": row["_id"], **{key: row[key] for key in ("domain", "sub_domain", "difficulty", "length")}}
    meta["random_baseline"] = 0.25
    return Instance(_HEAD + row["context"].strip(), question, (row["answer"],), max_new_tokens, meta=meta)
