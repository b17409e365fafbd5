"""LV-Eval (Yuan et al. 2024, "LV-Eval: A Balanced Long-Context Benchmark with 5 Length Levels Up to 256K",
arXiv 2402.05136): its released files, prompts, budgets and keyword-recall-gated F1.

``lveval:SUBSET:level=16k:data=DIR`` reads ``DIR/SUBSET_LEVEL.jsonl`` (or ``DIR/SUBSET/SUBSET_LEVEL.jsonl``, as
the released ``SUBSET.zip`` unpacks) with fields ``input``, ``context``, ``answers``, ``length``, ``dataset``,
``language``, ``answer_keywords`` and ``confusing_facts`` (the confusing facts LV-Eval already inserted in the
context). English subsets only; ``level`` is one of the five length levels. The prompt is ``DATASET_PROMPT``
verbatim, the budget ``DATASET_MAXGEN``. The score is LV-Eval's: against the first gold answer only, F1 gated
by the recall of ``answer_keywords`` (below 0.2 scores 0, blacklisted words not counted; factrecall_en: plain
F1). See :mod:`longreach.tasks.released` for the length policy (LV-Eval, like LongBench, cuts the middle).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from longreach.tasks import metrics
from longreach.tasks.base import Sample, register_family
from longreach.tasks.released import (
    LONGBENCH_FIELDS,
    OPTIONAL_TEXT,
    Instance,
    ReleasedTask,
    Source,
    find_file,
    read_rows,
    templated,
)

_MIXUP = (
    "Please answer the following question based on the given passages. Questions and answers are only relevant to "
    "one passage. Only give me the answer and do not output any other explanation and evidence.\n\nArticle: "
    "{context}\n\nPlease answer the following question based on the above passages. Questions and answers are only "
    "relevant to one passage. Only give me the answer and do not output any other explanation and evidence.\n\n"
    "Question: {input}\nAnswer:"
)
PROMPTS = {
    "hotpotwikiqa_mixup": (
        "Answer the question based on the given passages. Questions and answers are only relevant to some passages. "
        "Only give me the answer and do not output any other explanation and evidence.\n\nArticle: {context}\n\n"
        "Please answer the following question based on the above passages. Questions and answers are only relevant "
        "to some passages. Only give me the answer and do not output any other explanation and evidence.\n\n"
        "Question: {input}\nAnswer:"
    ),
    "loogle_SD_mixup": _MIXUP,
    "loogle_CR_mixup": _MIXUP,
    "loogle_MIR_mixup": _MIXUP,
    "multifieldqa_en_mixup": _MIXUP,
    "factrecall_en": (
        "Please answer the following questions based on the given article.\n\nArticle: {context}\n\nPlease answer "
        "the following questions based on the above article.\n\nQuestion: {input}\nAnswer:"
    ),
}
MAX_NEW_TOKENS = {name: 16 if name == "factrecall_en" else 64 for name in PROMPTS}
SOURCE = Source("LV-Eval", "https://huggingface.co/datasets/Infinigence/LVEval (one SUBSET.zip per subset)")
SCHEMA = (*LONGBENCH_FIELDS, ("answer_keywords", OPTIONAL_TEXT))
Subset = Literal[
    "hotpotwikiqa_mixup",
    "loogle_SD_mixup",
    "loogle_CR_mixup",
    "loogle_MIR_mixup",
    "multifieldqa_en_mixup",
    "factrecall_en",
]
Level = Literal["16k", "32k", "64k", "128k", "256k"]


@register_family
@dataclass(frozen=True)
class LVEval(ReleasedTask):
    """An English LV-Eval subset at one length level, from the released files."""

    subset: Subset = field(metadata={"help": "hotpotwikiqa_mixup, loogle_SD/CR/MIR_mixup, ..., factrecall_en"})
    level: Level = field(default="16k", metadata={"help": "length level: 16k | 32k | 64k | 128k | 256k"})
    data: str = field(default="", metadata={"help": "folder holding SUBSET_LEVEL.jsonl (LV-Eval's SUBSET.zip)"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget; 0: LV-Eval's DATASET_MAXGEN"})

    family: ClassVar[str] = "lveval"
    summary: ClassVar[str] = "LV-Eval released files (keyword-gated F1): lveval:SUBSET:level=16k:data=DIR"
    source: ClassVar[Source] = SOURCE

    def instances(self) -> tuple[Instance, ...]:
        return _instances(self.subset, self.level, self.data, self.budget(MAX_NEW_TOKENS[self.subset]))

    def score(self, sample: Sample, prediction: str) -> float:
        if self.subset == "factrecall_en":
            return metrics.qa_f1(prediction, sample.answers[0])
        return metrics.keyword_gated_f1(prediction, sample.answers[0], sample.meta.get("answer_keywords") or "")


@functools.cache
def _instances(subset: str, level: str, data: str, max_new_tokens: int) -> tuple[Instance, ...]:
    name = f"{subset}_{level}.jsonl"
    rows = read_rows(SOURCE, find_file(SOURCE, data, (name, f"{subset}/{name}")), SCHEMA)
    return tuple(_instance(row, subset, max_new_tokens) for _, row in rows)


def _instance(row: dict, subset: str, max_new_tokens: int) -> Instance:
    keywords = row.get("answer_keywords")
    meta = {"length": row["length"], "answer_keywords": keywords, "confusing_facts": row.get("confusing_facts")}
    return templated(row, PROMPTS[subset], max_new_tokens, meta)
