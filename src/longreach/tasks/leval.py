"""L-Eval (An et al. 2024, "L-Eval: Instituting Standardized Evaluation for Long Context Language Models",
arXiv 2307.11088): its released files, prompts and automatic metrics.

``leval:SUBSET:data=DIR`` reads ``DIR/SUBSET.jsonl`` (or the release's ``DIR/Closed-ended-tasks/SUBSET.jsonl``,
``DIR/Open-ended-tasks/SUBSET.jsonl``): one line a document, ``{"input": document, "instructions": [...],
"outputs": [...], "source": ..., "evaluation": ...}``; each instruction is one instance, in file order. Lines
whose ``evaluation`` is ``human`` or ``LLM`` are left out, as L-Eval's n-gram evaluation does.

Closed-ended subsets (coursera, gsm100, quality, tpo, topic_retrieval_longchat, sci_fi, codeU) are scored by
L-Eval's ``auto_eval.py``: option letters (Coursera: several, a proper subset scores 0.25), the GSM answer
number, CodeU's output words, a topic contained in the answer, sci_fi's true/false. Only sci_fi's loyalty half
is scored: its "fact" half asks the question again without the document, a second generation a sample does not
make. Open-ended subsets are scored per line's ``evaluation``: ``f1`` (QA F1) or ``rouge`` (ROUGE-L; L-Eval
reports the geometric mean of the ROUGE-1/2/L means, which is no mean of per-sample scores).

Prompts are L-Eval's Llama-2-chat baseline (``Baselines/llama2-chat-test.py``: ``get_sys_prompt``, then the
exam, GSM/CodeU/topic or open-ended frame; the open-ended one asks for as many words as the gold answer has),
without the ``[INST]`` markers, which the prompt format supplies; the budget is L-Eval's 512 tokens. L-Eval
cuts long documents from the end (from the start for code); here the middle is cut
(:mod:`longreach.tasks.released`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from longreach.tasks import metrics
from longreach.tasks.base import Sample, register_family
from longreach.tasks.released import ANY, TEXT, TEXTS, Instance, ReleasedTask, Source, find_file, read_rows

Closed = Literal["coursera", "gsm100", "quality", "tpo", "topic_retrieval_longchat", "sci_fi", "codeU"]
Open = Literal[
    "financial_qa",
    "gov_report_summ",
    "legal_contract_qa",
    "meeting_summ",
    "multidoc_qa",
    "narrative_qa",
    "natural_question",
    "news_summ",
    "paper_assistant",
    "patent_summ",
    "review_summ",
    "scientific_qa",
    "tv_show_summ",
]
Subset = Literal[Closed, Open]
CLOSED = get_args(Closed)
SOURCE = Source("L-Eval", "https://github.com/OpenLMLab/LEval/tree/main/LEval-data")
SCHEMA = (("input", TEXT), ("instructions", TEXTS), ("outputs", TEXTS), ("source", ANY), ("evaluation", TEXT))
_SCORED = ("exam", "f1", "rouge")
_DIRECT = "Please directly give the answer without any additional output or explanation "
_OPTIONS = ("coursera", "quality", "tpo")
SYSTEM = {
    "gsm100": "Given several question answer pairs, you need to follow a similar format to answer the last "
    "question. Make sure the response is end with The answer is _ . ",
    "topic_retrieval_longchat": "Below is a record of our previous conversation on many different topics. You are "
    "the ASSISTANT, and I am the USER. At the beginning of each topic, the USER will say 'I would like to discuss "
    "the topic of <TOPIC>'. Memorize each <TOPIC>. At the end of the record, I will ask you to retrieve the "
    "first/second/third topic names. Now the record start. ",
    "coursera": "Now you are given a very long document. Please follow the instruction based on this document. For "
    "multi-choice questions, there could be a sinlge correct option or multiple correct options. Please only provide "
    "the letter corresponding to the answer (like A or AB) when answering. ",
    "codeU": "Now you are given a code base consisting of a large amount of functions and the corresponding "
    "comments. In the end, I will call some functions defined in the code base. Please carefully read these codes "
    "and comments and answer the question.",
    "sci_fi": 'Now you are given a scientific fiction. I will ask you some questions and the answer should be "True" '
    'or "False". Notice that you should answer the question based on the evidence in the document instead of your '
    "background knowledge.",
    "exam": "Now you are given a very long document. Please follow the instruction based on this document. For "
    "multi-choice questions, there is only a sinlge correct option. Please only provide the letter corresponding to "
    "the answer (like A or B) when answering. For other questions, please directly give the concise and accurate "
    "answer. ",
    "open": "Now you are given a very long document. Please follow the instruction after this document. These "
    "instructions may include summarizing a document, answering questions based on the document, or writing a "
    "required paragraph. ",
}


@register_family
@dataclass(frozen=True)
class LEval(ReleasedTask):
    """An L-Eval subset from the released files, one instance per instruction."""

    subset: Subset = field(metadata={"help": "closed: coursera, gsm100, quality, tpo, ..., codeU; open: ..."})
    data: str = field(default="", metadata={"help": "folder holding SUBSET.jsonl (L-Eval's LEval-data)"})
    max_new_tokens: int = field(default=0, metadata={"help": "generation budget; 0: L-Eval's 512"})

    family: ClassVar[str] = "leval"
    summary: ClassVar[str] = "L-Eval released files (closed-ended exact match, open-ended F1/ROUGE-L): leval:SUBSET"
    source: ClassVar[Source] = SOURCE

    def instances(self) -> tuple[Instance, ...]:
        return _instances(self.subset, self.data, self.budget(512))

    def score(self, sample: Sample, prediction: str) -> float:
        gold = sample.answers[0]
        if sample.meta["evaluation"] == "f1":
            return metrics.qa_f1(prediction, gold)
        if sample.meta["evaluation"] == "rouge":
            return metrics.rouge_l(prediction, gold)
        return _closed(self.subset, prediction, gold)


def _closed(subset: str, prediction: str, gold: str) -> float:
    """L-Eval's closed-ended score of one prediction."""
    if subset in _OPTIONS:
        option = metrics.leval_option(prediction, multiple=subset == "coursera")
        return metrics.leval_exact_match(option, metrics.leval_gold_option(gold))
    if subset == "gsm100":
        return metrics.leval_exact_match(metrics.leval_number(prediction), metrics.leval_number(gold))
    if subset == "codeU":
        return metrics.leval_exact_match(metrics.leval_code_output(prediction, gold), metrics.leval_code_gold(gold))
    if subset == "sci_fi":
        loyalty = gold.lower().split("[fact:")[0].strip()
        return metrics.leval_exact_match(metrics.leval_judgement(prediction), loyalty)
    return metrics.leval_exact_match(prediction, gold)


@functools.cache
def _instances(subset: str, data: str, max_new_tokens: int) -> tuple[Instance, ...]:
    name = f"{subset}.jsonl"
    folder = "Closed-ended-tasks" if subset in CLOSED else "Open-ended-tasks"
    rows = read_rows(SOURCE, find_file(SOURCE, data, (name, f"{folder}/{name}")), SCHEMA)
    items = []
    for line, (_, row) in enumerate(rows):
        if row["evaluation"] in _SCORED:
            for number, (instruction, output) in enumerate(zip(row["instructions"], row["outputs"], strict=False)):
                parts = _prompt(subset, row["input"], instruction, output)
                meta = {"document": line, "instruction": number, "evaluation": row["evaluation"]}
                items.append(Instance(*parts[:2], (output,), max_new_tokens, parts[2], meta=meta))
    if not items:
        raise SOURCE.fail(f"{name} in {data} has no instance scored by exam, f1 or rouge")
    return tuple(items)


def _prompt(subset: str, document: str, instruction: str, output: str) -> tuple[str, str, str]:
    """(context, question, answer prefix) of L-Eval's Llama-2-chat baseline for this subset."""
    if subset in ("gsm100", "codeU", "topic_retrieval_longchat"):
        return SYSTEM[subset] + document, "\n\n" + instruction, ""
    if subset in CLOSED:
        head = SYSTEM.get(subset, SYSTEM["exam"]) + "Document is as follows. "
        tail = f" \nQuestion: {instruction}.  {_DIRECT}"
        return head + document, tail, "\nAnswer:"
    words = len(output.split())
    tail = f" Instruction: {instruction} \nAnswer this question with {words} words."
    return SYSTEM["open"] + "Document is as follows. " + document, tail, ""
