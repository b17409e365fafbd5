"""Official metrics of released long-context benchmarks, each equal to its reference implementation.

LongBench v1 (Bai et al. 2024, arXiv 2308.14508, ``LongBench/metrics.py``): QA F1 over SQuAD-normalised tokens,
ROUGE-L, classification, passage retrieval and count scores, code edit similarity. LongBench v2 (Bai et al.
2025, arXiv 2412.15204): the ``The correct answer is (X)`` letter. LV-Eval (Yuan et al. 2024, arXiv
2402.05136, ``metrics.py``): F1 gated by answer-keyword recall. L-Eval (An et al. 2024, arXiv 2307.11088,
``Evaluation/auto_eval.py``, ``em.py``): option, number, code-output and true/false extraction and its exact
match. InfiniteBench (Zhang et al. 2024, arXiv 2402.13718, ``src/compute_scores.py``): the per-task scorers.

Known differences, by choice of package: ROUGE uses ``rouge-score`` (lowercased, non-alphanumerics dropped, one
LCS over the whole text), where LongBench and LV-Eval use the ``rouge`` package (case kept, punctuation glued to
words, texts split into sentences at ``.``, summary-level union LCS over unique words); scores agree on plain
lowercase single-sentence text and differ otherwise. Code similarity uses ``rapidfuzz`` (the optimal indel
ratio) where LongBench's ``fuzzywuzzy`` without ``python-Levenshtein`` uses difflib's greedy matching blocks;
both are rounded to a whole percent as fuzzywuzzy does, and agree whenever difflib finds the longest common
subsequence (typical for one line of code). Chinese tasks (jieba tokenisation) are not covered.
"""

from __future__ import annotations

import re
import string
from collections import Counter

from rapidfuzz import fuzz
from rouge_score import rouge_scorer

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ROUGE = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=False)


def normalize_answer(text: str, lower: bool = True) -> str:
    """SQuAD's normalisation as LongBench uses it: lowercase, drop punctuation, articles and extra whitespace
    (L-Eval's exact match keeps the case: ``lower=False``)."""
    text = text.lower() if lower else text
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(predicted: list[str], gold: list[str]) -> float:
    """F1 of two token multisets (0 when nothing is shared)."""
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, gold: str) -> float:
    """LongBench's ``qa_f1_score`` (also L-Eval's ``f1`` and InfiniteBench's En.QA, per gold answer)."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(gold).split())


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F-measure (``rouge-score``, no stemming); 0 for an empty prediction, as LongBench's guard gives."""
    return _ROUGE.score(gold, prediction)["rougeL"].fmeasure


def rouge_lsum(prediction: str, gold: str) -> float:
    """ROUGE-Lsum F-measure (sentences split at newlines), InfiniteBench's En.Sum score."""
    return _ROUGE.score(gold, prediction)["rougeLsum"].fmeasure


def classification(prediction: str, gold: str, classes: list[str]) -> float:
    """LongBench's ``classification_score``: the classes named in the prediction, less those that are part of
    the gold label; 1/len when the gold is among them."""
    named = [c for c in classes if c in prediction]
    position = 0
    while position < len(named):  # the reference removes while iterating: the entry after a removal is skipped
        term = named[position]
        if term in gold and term != gold:
            named.remove(term)
        position += 1
    return 1.0 / len(named) if gold in named else 0.0


def _share_equal(prediction: str, target: str) -> float:
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval(prediction: str, gold: str) -> float:
    """LongBench's ``retrieval_score``: the share of numbers in the prediction equal to the gold paragraph's."""
    return _share_equal(prediction, re.findall(r"Paragraph (\d+)", gold)[0])


def count(prediction: str, gold: str) -> float:
    """LongBench's ``count_score``: the share of numbers in the prediction equal to the gold count."""
    return _share_equal(prediction, str(gold))


def code_similarity(prediction: str, gold: str) -> float:
    """LongBench's ``code_sim_score``: edit similarity of the first line without a backtick, ``#`` or ``//``."""
    lines = prediction.lstrip("\n").split("\n")
    line = next((x for x in lines if "`" not in x and "#" not in x and "//" not in x), "")
    return round(fuzz.ratio(line, gold)) / 100


# LV-Eval's word blacklist: these words do not count as recalled keywords (``ABANDON_WORDS_EN``).
LVEVAL_BLACKLIST = frozenset(
    "and to of in her was with for it from is that his he by she they or at because be on are their what as had "
    "were about being this who but have has when which does".split()
)


def keyword_recall(prediction: str, keywords: str) -> float:
    """LV-Eval's answer-keyword recall: shared normalised tokens, blacklisted words left out of the hits (not
    of the keyword count)."""
    keyword_tokens = normalize_answer(keywords).split()
    if not keyword_tokens:
        return 0.0
    common = Counter(normalize_answer(prediction).split()) & Counter(keyword_tokens)
    hits = sum(n for word, n in common.items() if word not in LVEVAL_BLACKLIST)
    return hits / len(keyword_tokens)


def keyword_gated_f1(prediction: str, gold: str, keywords: str, threshold: float = 0.2) -> float:
    """LV-Eval's ``qa_f1_score_with_gold_ans``: 0 when the keyword recall is below ``threshold``, else QA F1
    against the full gold answer (no keywords: plain QA F1)."""
    if keywords and keyword_recall(prediction, keywords) < threshold:
        return 0.0
    return qa_f1(prediction, gold)


def correct_answer_letter(response: str) -> str | None:
    """LongBench v2's extraction: the letter of ``The correct answer is (X)`` (or ``... is X``), asterisks
    removed; None when the response has neither."""
    response = response.replace("*", "")
    match = re.search(r"The correct answer is \(([A-D])\)", response) or re.search(
        r"The correct answer is ([A-D])", response
    )
    return match.group(1) if match else None


# InfiniteBench


def first_integer(prediction: str) -> str:
    """InfiniteBench's ``first_int_match``: the first run of digits ('' when none)."""
    return next((part for part in re.split("[^0-9]", prediction) if part), "")


def kv_retrieval(prediction: str, value: str) -> float:
    """InfiniteBench Retrieve.KV: the value is one of the prediction's words (split at punctuation)."""
    return float(value in _spaced(prediction, "\n:\"'.,?!{}").split())


def math_find(prediction: str, label: int | float) -> float:
    """InfiniteBench Math.Find: the first number in the prediction equals the label (int or float)."""
    first = re.search(r"\d+\.\d+|\d+", prediction)
    if first is None:
        return 0.0
    text = first.group(0).strip()
    if isinstance(label, int):
        return float("." not in text and int(text) == label)
    return float(float(text) == label)


def infinite_choice(prediction: str, label: list[str]) -> float:
    """InfiniteBench En.MC: the option letter or text, read from the start, after an answer phrase, or as the
    first single-letter word. ``label`` is [option text, letter]."""
    prediction = prediction.strip()
    if not prediction:
        return 0.0
    if prediction[0] in "ABCD":
        return float(prediction[0] in label)
    if prediction in label:
        return 1.0
    prediction = _squeeze(_spaced(prediction, "\n\"'.,?!{}"))
    for phrase in ("answer is:", "answer:", "answer is", "option is"):
        at = prediction.find(phrase)
        if at != -1:
            rest = prediction[at + len(phrase) + 1 :]
            return float(len(prediction) >= at + len(phrase) + 1 and any(rest.startswith(s) for s in label))
    word = next((w for w in prediction.split() if w in "ABCD"), None)
    return float(word is not None and word in label)


def _spaced(prediction: str, separators: str) -> str:
    for separator in separators:
        prediction = prediction.replace(separator, " ")
    return prediction


def _squeeze(text: str) -> str:
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def code_debug(prediction: str, label: list[str]) -> float:
    """InfiniteBench Code.Debug: the option letter at the start (``B.``/``B:``), or the letter or function name
    right after the first answer phrase. ``label`` is [function name, letter]."""
    prediction = prediction.strip()
    name, letter = label
    if prediction[:2] in (f"{letter}.", f"{letter}:"):
        return 1.0
    for token in ("\n", "`", "'", '"', "-", "*", "Option", "option"):
        prediction = prediction.replace(token, " ")
    prediction = _squeeze(prediction)
    for phrase in ("answer is:", "is:", "answer:", "correct option is:"):
        at = prediction.find(phrase)
        if at != -1:
            rest = prediction[at + len(phrase) + 1 :]
            return float(len(prediction) >= at + len(phrase) + 1 and rest.startswith((letter, name)))
    return 0.0


# L-Eval


def leval_option(response: str, multiple: bool) -> str:
    """L-Eval's ``process_output_mc``: the chosen option letter(s); ``multiple`` (Coursera) reads several.
    Falls back to ``A`` as L-Eval does (its random guess)."""
    if not response.strip():
        return "None"
    if response in "ABCD":
        return response
    if not multiple:
        first = next((ch for ch in response if ch in "ABCD"), None)
        if first:
            return first
    lead = ""
    for ch in response:
        if ch not in "ABCD":
            break
        lead += ch
    if len(lead) > 1:
        return "".join(sorted(set(lead)))
    rest = response[len(lead) :].split("Question")[0]
    letters = re.sub(r"[^A-D]", "", lead + " ".join(re.findall(r"\s*[A-Z](?=[\s.)])", rest)).strip())
    chosen = "".join(sorted(set(letters)))
    if not chosen:
        run = re.search(r"[ABCD]+", rest)
        chosen = run.group() if run else ""
    return chosen or "A"


def leval_gold_option(gold: str) -> str:
    """L-Eval's ``process_gt_mc``: the letters A-D of the gold's first word (``(B) text`` -> ``B``)."""
    return re.sub(r"[^A-D]", "", gold.split()[0]) or "A"


def leval_exact_match(prediction: str, gold: str) -> float:
    """L-Eval's ``exact_match_score``: option letters must match (0.25 for a proper subset of several correct
    options); a number must equal the gold's; other text must contain the gold (case and spaces ignored)."""
    normal_gold, normal_prediction = normalize_answer(gold, lower=False), normalize_answer(prediction, lower=False)
    if all(ch in "ABCD" for ch in normal_gold):
        if normal_prediction == normal_gold:
            return 1.0
        return 0.25 if set(normal_prediction) <= set(normal_gold) else 0.0
    try:
        return float(float(prediction) == float(gold))
    except ValueError:
        return float(gold.lower().replace(" ", "") in prediction.lower().replace(" ", ""))


def leval_number(response: str) -> str:
    """L-Eval's ``process_math`` (GSM100): the digits of ``The answer is N``, else of the last word holding a
    digit in the first paragraph, up to a decimal point."""
    match = re.search(r"The answer is (\S+)", response)
    if match:
        word = match.group(1)
    else:
        words = response.split("\n\n")[0].split(" ")[::-1]
        word = next((w for w in words if any(ch.isdigit() for ch in w)), "")
    return "".join(ch for ch in word.split(".")[0] if ch.isdigit())


def leval_code_gold(text: str) -> str:
    """L-Eval's ``process_gt_code`` (CodeU): whitespace squeezed, commas, quotes, backslashes and ``.0`` removed."""
    text = re.sub(r"\s+", " ", text)
    for old, new in ((",", ""), ("'", ""), ("\\", ""), (".0", ""), ("] [", "]["), ("[ [", "[["), ("] ]", "]]")):
        text = text.replace(old, new)
    return text


def leval_code_output(prediction: str, gold: str) -> str:
    """L-Eval's ``process_output_code``: filler phrases removed, then the words after ``the final output`` or
    the last words, as many as the gold has plus three."""
    keep = len(gold.split()) + 3
    text = leval_code_gold(prediction)
    for phrase in ("will be", "of the code", "is", "would be", "the value of", "the result of", "printed"):
        text = text.replace(phrase, "")
    if "the final output" in text:
        return " ".join(re.split(r"\s+", text.split("the final output")[-1])[:keep])
    return " ".join(re.split(r"\s+", text)[-keep:])


def leval_judgement(response: str) -> str:
    """L-Eval's sci_fi reading of the first ``true``/``false`` word before any ``[fact:`` part (``<error>``
    when there is none)."""
    for word in response.lower().split("[fact:")[0].split():
        if "true" in word:
            return "true"
        if "false" in word:
            return "false"
    return "<error>"
