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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from longreach.tasks import metrics
from longreach.tasks.base import Sample, register_family
from longreach.tasks.released import (
    ANY,
    TEXT,
    TEXTS,
    Instance,
    ReleasedTask,
    Source,
    find_file,
    read_rows,
    split_template,
)

Metric = Callable[[str, str, list[str]], float]


def _golds_only(metric: Callable[[str, str], float]) -> Metric:
    return lambda prediction, gold, classes: metric(prediction, gold)


@dataclass(frozen=True)
class _Subset:
    template: str
    max_new_tokens: int
    metric: Metric


SUBSETS: dict[str, _Subset] = {
    "narrativeqa": _Subset(
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: {context}\n\nNow, answer the question based on the story asconcisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
        128,
        _golds_only(metrics.qa_f1),
    ),
    "qasper": _Subset(
        "You are given a scientific article and a question. Answer the question as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on the above article as concisely as you can, using a single phrase or sentence if possible. If the question cannot be answered based on the information in the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:",
        128,
        _golds_only(metrics.qa_f1),
    ),
    "multifieldqa_en": _Subset(
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        64,
        _golds_only(metrics.qa_f1),
    ),
    "hotpotqa": _Subset(
        "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        32,
        _golds_only(metrics.qa_f1),
    ),
    "2wikimqa": _Subset(
        "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        32,
        _golds_only(metrics.qa_f1),
    ),
    "musique": _Subset(
        "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:",
        32,
        _golds_only(metrics.qa_f1),
    ),
    "gov_report": _Subset(
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report.\n\nSummary:",
        512,
        _golds_only(metrics.rouge_l),
    ),
    "qmsum": _Subset(
        "You are given a meeting transcript and a query containing a question or instruction. Answer the query in one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting transcript in one or more sentences.\n\nQuery: {input}\nAnswer:",
        512,
        _golds_only(metrics.rouge_l),
    ),
    "multi_news": _Subset(
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\nNow, write a one-page summary of all the news.\n\nSummary:",
        512,
        _golds_only(metrics.rouge_l),
    ),
    "trec": _Subset(
        "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n{input}",
        64,
        metrics.classification,
    ),
    "triviaqa": _Subset(
        "Answer the question based on the given passage. Only give me the answer and do not output any other words. The following are some examples.\n\n{context}\n\n{input}",
        32,
        _golds_only(metrics.qa_f1),
    ),
    "samsum": _Subset(
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}",
        128,
        _golds_only(metrics.rouge_l),
    ),
    "passage_count": _Subset(
        "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final count of unique paragraphs after removing duplicates. The output format should only contain the number, such as 1, 2, 3, and so on.\n\nThe final answer is: ",
        32,
        _golds_only(metrics.count),
    ),
    "passage_retrieval_en": _Subset(
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", etc.\n\nThe answer is: ",
        32,
        _golds_only(metrics.retrieval),
    ),
    "lcc": _Subset(
        "Please complete the code given below. \n{context}Next line of code:\n",
        64,
        _golds_only(metrics.code_similarity),
    ),
    "repobench-p": _Subset(
        "Please complete the code given below. \n{context}{input}Next line of code:\n",
        64,
        _golds_only(metrics.code_similarity),
    ),
}
E_SUBSETS = (
    "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec", "triviaqa", "samsum",
    "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
)
_FIRST_LINE = ("trec", "triviaqa", "samsum")
SCHEMA = (
    ("input", TEXT), ("context", TEXT), ("answers", TEXTS), ("length", ANY), ("dataset", TEXT), ("language", TEXT),
    ("all_classes", ANY), ("_id", TEXT),
)
SOURCE = Source("LongBench", "https://huggingface.co/datasets/THUDM/LongBench/resolve/main/data.zip")
Subset = Literal[
    "narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "gov_report", "qmsum",
    "multi_news", "trec", "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p",
    "qasper_e", "multifieldqa_en_e", "hotpotqa_e", "2wikimqa_e", "gov_report_e", "multi_news_e", "trec_e",
    "triviaqa_e", "samsum_e", "passage_count_e", "passage_retrieval_en_e", "lcc_e", "repobench-p_e",
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
    context, question = split_template(config.template, row["context"], input=row["input"])
    meta = {"id": row["_id"], "length": row["length"], "all_classes": row["all_classes"]}
    if subset.endswith("_e") and isinstance(row["length"], int):
        meta["length_bucket"] = length_bucket(row["length"])
    return Instance(context, question, tuple(row["answers"]), max_new_tokens, meta=meta)
