"""InfiniteBench (Zhang et al. 2024, "InfiniteBench: Extending Long Context Evaluation Beyond 100K Tokens",
arXiv 2402.13718): its released files, prompts, budgets and per-task scorers.

``infinitebench:SUBSET:data=DIR`` reads ``DIR/SUBSET.jsonl`` (fields ``id``, ``context``, ``input``,
``answer``, ``options``) for En.QA (``longbook_qa_eng``), En.MC (``longbook_choice_eng``), En.Sum
(``longbook_sum_eng``), Retrieve.PassKey / Number / KV (``passkey``, ``number_string``, ``kv_retrieval``),
Code.Debug (``code_debug``) and Math.Find (``math_find``). Prompts are InfiniteBench's templates for open models
(``yarn_mistral_templates`` in ``src/prompt.py``, also used for Yi and ChatGLM3): their closing answer lead
(``The pass key is``) is the answer prefix. Budgets are ``DATA_NAME_TO_MAX_NEW_TOKENS``; scores are
``compute_scores.py``'s: first integer (PassKey, Number), a word equal to the value (KV), first number (Math.Find),
the option letter or text (En.MC, Code.Debug), QA F1 (En.QA), ROUGE-Lsum (En.Sum). Random baseline of the
four-option subsets: 0.25. See :mod:`longreach.tasks.released` for the length policy (InfiniteBench also cuts
the middle).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.tasks import metrics
from longreach.tasks.base import Sample, register_family
from longreach.tasks.released import ANY, LIST, TEXT, Instance, ReleasedTask, Source, find_file, read_rows

_OPTIONS = "\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n\n"
_FIND = "There is an important info hidden inside a lot of irrelevant text. Find it"


@dataclass(frozen=True)
class _Subset:
    head: str
    question: str
    answer_prefix: str
    max_new_tokens: int


SUBSETS = {
    "passkey": _Subset(
        f"{_FIND} and memorize it. I will quiz you about the important information.\n\n",
        "\n\n{input}\n\n",
        "The pass key is",
        6,
    ),
    "number_string": _Subset(
        f"{_FIND}. I will quiz you about the important information there.\n\n",
        "\n\n{input}\n\n",
        "The sequence of digits is",
        12,
    ),
    "kv_retrieval": _Subset(
        "Extract the value corresponding to the specified key in the JSON object below.\n\n", "\n\n{input}", "", 50
    ),
    "longbook_sum_eng": _Subset("Summarize the book below.\n\n", "\n\n", "Summary:", 1200),
    "longbook_choice_eng": _Subset(
        "Read the book and answer the question.\n\n",
        "\n\nQuestion: {input}" + _OPTIONS,
        "The letter of the correct answer is",
        40,
    ),
    "longbook_qa_eng": _Subset(
        "Read the book and answer the question. Be very concise in your answer.\n\n",
        "\n\nQuestion: {input}\n",
        "Answer:",
        40,
    ),
    "code_debug": _Subset(
        "Following is a Python code where exactly one of the functions/methods has a deliberate error that makes it "
        "crash.\n\n",
        "\n\nOptions:" + _OPTIONS,
        "The correct option is:",
        5,
    ),
    "math_find": _Subset("{prefix}\n\n", "\n\n{input}", "", 3),
}
Subset = Literal[
    "passkey",
    "number_string",
    "kv_retrieval",
    "longbook_sum_eng",
    "longbook_choice_eng",
    "longbook_qa_eng",
    "code_debug",
    "math_find",
]
_CHOICE = ("longbook_choice_eng", "code_debug")
SOURCE = Source("InfiniteBench", "https://huggingface.co/datasets/xinrongzhang2022/InfiniteBench")
SCHEMA = (("id", ANY), ("context", TEXT), ("input", TEXT), ("answer", ANY), ("options", LIST))


@register_family
@dataclass(frozen=True)
class InfiniteBench(ReleasedTask):
    """An English InfiniteBench task from the released files."""

    subset: Subset = field(metadata={"help": "passkey, number_string, kv_retrieval, longbook_qa/choice/sum_eng, ..."})
    data: str = field(default="", metadata={"help": "folder holding SUBSET.jsonl (InfiniteBench's release)"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget; 0: InfiniteBench's own"})

    family: ClassVar[str] = "infinitebench"
    summary: ClassVar[str] = "InfiniteBench released files (En.QA/MC/Sum, Retrieve.*, Code.Debug, Math.Find)"
    source: ClassVar[Source] = SOURCE

    def instances(self) -> tuple[Instance, ...]:
        return _instances(self.subset, self.data, self.budget(SUBSETS[self.subset].max_new_tokens))

    def score(self, sample: Sample, prediction: str) -> float:
        label = sample.meta["label"]
        if self.subset in ("passkey", "number_string"):
            return float(label == metrics.first_integer(prediction))
        if self.subset == "kv_retrieval":
            return metrics.kv_retrieval(prediction, label)
        if self.subset == "math_find":
            return metrics.math_find(prediction, label)
        if self.subset == "longbook_choice_eng":
            return metrics.infinite_choice(prediction, label)
        if self.subset == "code_debug":
            return metrics.code_debug(prediction, label)
        if self.subset == "longbook_qa_eng":
            return max(metrics.qa_f1(prediction, gold) for gold in sample.answers)
        return max(metrics.rouge_lsum(prediction, gold) for gold in sample.answers)

    def reference_answer(self, sample: Sample) -> str:
        label = sample.meta["label"]
        return f" {label[1]}." if self.subset in _CHOICE else f" {sample.answers[0]}"


@functools.cache
def _instances(subset: str, data: str, max_new_tokens: int) -> tuple[Instance, ...]:
    rows = read_rows(SOURCE, find_file(SOURCE, data, (f"{subset}.jsonl",)), SCHEMA)
    return tuple(_instance(where, row, subset, max_new_tokens) for where, row in rows)


def _instance(where: str, row: dict, subset: str, max_new_tokens: int) -> Instance:
    config, label = SUBSETS[subset], _label(where, row, subset)
    fields = {"input": row["input"], **dict(zip("ABCD", row["options"], strict=False))}
    if subset == "math_find":
        fields["prefix"] = _math_prefix(where, row["input"])
    head, question = config.head.format(**fields), config.question.format(**fields)
    answers = [str(a) for a in (row["answer"] if isinstance(row["answer"], list) else [row["answer"]])]
    meta = {"id": row["id"], "label": label, **({"random_baseline": 0.25} if subset in _CHOICE else {})}
    return Instance(head + row["context"], question, tuple(answers), max_new_tokens, config.answer_prefix, meta)


def _label(where: str, row: dict, subset: str) -> Any:
    """What InfiniteBench scores against: the answer (its first item when a list); for the four-option subsets
    [option text, letter] (``get_answer``)."""
    answer = row["answer"][0] if isinstance(row["answer"], list) and row["answer"] else row["answer"]
    if subset in _CHOICE:
        options = row["options"]
        if len(options) != 4 or answer not in options:
            raise SOURCE.fail(f"{where}: field 'answer' must be one of the four 'options'; got {answer!r}")
        return [answer, "ABCD"[options.index(answer)]]
    valid = isinstance(answer, int | float) if subset == "math_find" else isinstance(answer, str)
    if not valid or isinstance(answer, bool):
        kind = "a number" if subset == "math_find" else "a string"
        raise SOURCE.fail(f"{where}: field 'answer' must be {kind} (or a list of one); got {answer!r}")
    return answer


def _math_prefix(where: str, question: str) -> str:
    """Math.Find's lead line: ``What is the largest number in the following list?`` (InfiniteBench's text,
    built from the ``The ... of`` in the question)."""
    found = re.findall(r"The .+ of", question)
    if not found:
        raise SOURCE.fail(f"{where}: field 'input' must ask for 'The ... of' the list; got {question[:40]!r}")
    return f"What is {found[0].lower()[:-3]} in the following list?"
