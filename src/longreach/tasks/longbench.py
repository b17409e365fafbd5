"""LongBench v1 (Bai et al. 2024, "LongBench: A Bilingual, Multitask Benchmark for Long Context Understanding",
arXiv 2308.14508): its released files, prompts, generation budgets and metrics.

``longbench:SUBSET:data=DIR`` reads ``DIR/SUBSET.jsonl`` from the released ``data.zip`` (fields ``input``,
``context``, ``answers``, ``length``, ``dataset``, ``language``, ``all_classes``, ``_id``). Subsets: the 16
English tasks and the 13 LongBench-E files (``SUBSET_e``, the same prompts and metrics, with LongBench-E's
length bucket 0-4k / 4-8k / 8k+ of ``length`` in the meta). The prompt is ``dataset2prompt`` verbatim, the
budget ``dataset2maxlen``; the score is the metric's best over the gold answers (trec, triviaqa and samsum
read the first line of the prediction), as LongBench's ``eval.py``. Unlike LongBench's ``pred.py``, the prompt
format (raw/chat) applies to every subset, few-shot and code ones included, and the middle cut keeps the
question whole (LongBench cuts the middle of the whole prompt). See :mod:`longreach.tasks.released` for the
length policy.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from longreach.tasks import metrics
from longreach.tasks.base import Sample, register_family
from longreach.tasks.released import (
    ANY,
    LONGBENCH_FIELDS,
    TEXT,
    Instance,
    ReleasedTask,
    Source,
    find_file,
    read_rows,
    templated,
)

Metric = Callable[[str, str, list[str]], float]


def _golds_only(metric: Callable[[str, str], float]) -> Metric:
    return lambda prediction, gold, classes: metric(prediction, gold)


_METRICS: dict[str, Metric] = {
    "qa_f1": _golds_only(metrics.qa_f1),
    "rouge_l": _golds_only(metrics.rouge_l),
    "classification": metrics.classification,
    "count": _golds_only(metrics.count),
    "retrieval": _golds_only(metrics.retrieval),
    "code_similarity": _golds_only(metrics.code_similarity),
}


@dataclass(frozen=True)
class _Subset:
    template: str
    max_new_tokens: int
    metric: Metric


def _load_subsets() -> dict[str, _Subset]:
    """LongBench's ``dataset2prompt`` and ``dataset2maxlen`` (English tasks, verbatim) and ``eval.py``'s metric
    of each task, from ``data/longbench.json``."""
    text = importlib.resources.files("longreach.tasks").joinpath("data/longbench.json").read_text()
    return {
        name: _Subset(entry["prompt"], entry["max_new_tokens"], _METRICS[entry["metric"]])
        for name, entry in json.loads(text).items()
    }


SUBSETS = _load_subsets()
_FIRST_LINE = ("trec", "triviaqa", "samsum")
SCHEMA = (*LONGBENCH_FIELDS, ("all_classes", ANY), ("_id", TEXT))
SOURCE = Source("LongBench", "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip")
Subset = Literal[
    "narrativeqa",
    "qasper",
    "multifieldqa_en",
    "hotpotqa",
    "2wikimqa",
    "musique",
    "gov_report",
    "qmsum",
    "multi_news",
    "trec",
    "triviaqa",
    "samsum",
    "passage_count",
    "passage_retrieval_en",
    "lcc",
    "repobench-p",
    "qasper_e",
    "multifieldqa_en_e",
    "hotpotqa_e",
    "2wikimqa_e",
    "gov_report_e",
    "multi_news_e",
    "trec_e",
    "triviaqa_e",
    "samsum_e",
    "passage_count_e",
    "passage_retrieval_en_e",
    "lcc_e",
    "repobench-p_e",
]


def length_bucket(length: int) -> str:
    """LongBench-E's length bucket of an instance's ``length`` (words)."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"


@register_family
@dataclass(frozen=True)
class LongBench(ReleasedTask):
    """A LongBench (or LongBench-E) subset from the released files."""

    subset: Subset = field(metadata={"help": "narrativeqa, qasper, ... repobench-p; SUBSET_e for LongBench-E"})
    data: str = field(default="", metadata={"help": "folder holding SUBSET.jsonl (LongBench's data.zip)"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget; 0: LongBench's dataset2maxlen"})

    family: ClassVar[str] = "longbench"
    summary: ClassVar[str] = "LongBench v1 / LongBench-E released files: longbench:SUBSET:data=DIR"
    source: ClassVar[Source] = SOURCE

    @property
    def base(self) -> str:
        """The subset's LongBench v1 name (``hotpotqa_e`` -> ``hotpotqa``)."""
        return self.subset.removesuffix("_e")

    def instances(self) -> tuple[Instance, ...]:
        return _instances(self.subset, self.data, self.max_new_tokens)

    def score(self, sample: Sample, prediction: str) -> float:
        if self.base in _FIRST_LINE:
            prediction = prediction.lstrip("\n").split("\n")[0]
        metric, classes = SUBSETS[self.base].metric, sample.meta.get("all_classes") or []
        return max(metric(prediction, gold, classes) for gold in sample.answers)


@functools.cache
def _instances(subset: str, data: str, max_new_tokens: int) -> tuple[Instance, ...]:
    rows = read_rows(SOURCE, find_file(SOURCE, data, (f"{subset}.jsonl",)), SCHEMA)
    config = SUBSETS[subset.removesuffix("_e")]
    return tuple(_instance(row, config, max_new_tokens or config.max_new_tokens, subset) for _, row in rows)


def _instance(row: dict, config: _Subset, max_new_tokens: int, subset: str) -> Instance:
    meta = {"id": row["_id"], "length": row["length"], "all_classes": row["all_classes"]}
    if subset.endswith("_e") and isinstance(row["length"], int):
        meta["length_bucket"] = length_bucket(row["length"])
    return templated(row, config.template, max_new_tokens, meta)
