"""Scoring holes closed: an echo of a golden_thread prompt earns nothing, a list of candidates no more than a guess."""

import itertools
import re

import pytest

from longreach.tasks import parse_task, scoring
from longreach.tasks.biographies import candidates

GOLDEN_THREAD = ["golden_thread_diary", "golden_thread_floors"]
_PROSE = "The light was warm, the talk ran late, and everyone went home tired. "


def _rules(sample) -> str:
    return sample.question.split("Follow these instructions:\n")[1].split("\nWhen all entries")[0]


def _own_entry(task, entry: int, sample, restate: bool) -> str:
    """An entry in the model's own words naming its events; ``restate`` also copies the rules that name it."""
    events = [keyword for k, keyword in sample.meta["checks"] if k == entry]
    rules = [line[2:] for line in _rules(sample).splitlines() if any(e in line for e in events)] if restate else []
    body = " ".join(rules) + f" Today the crew talked about {' and '.join(events) or 'nothing much'} for hours. "
    return f"#*# {task.label} {entry}: " + body + _PROSE * 3


@pytest.mark.parametrize("name", GOLDEN_THREAD)
def test_golden_thread_echo_of_the_prompt_or_its_instructions_scores_zero(tiny, name):
    task = parse_task(name).task
    naive_credit = 0
    for index in range(4):
        sample = task.generate(tiny.tokenizer, 1200, 0.0, seed=0, index=index)
        rules = _rules(sample)
        paraphrased = rules.replace("every entry mentions", "every entry mentions a day of")
        echoes = [
            sample.prompt,
            sample.context + sample.question,
            sample.question + sample.answer_prefix,
            "\n" + rules,
            "\n" + rules + "\n" + paraphrased + "\n" + paraphrased,
            "\n" + rules + "\n*** finished",
        ]
        for echo in echoes:
            assert task.score(sample, echo) == 0.0, echo[:200]
        first = [keyword for entry, keyword in sample.meta["checks"] if entry == 1]
        naive_credit += any(scoring.contains(rules, keyword) for keyword in first)
        assert task.score(sample, task.reference_answer(sample)) == 1.0
    assert naive_credit, "the echoes tested here named entry 1's events: the old rule gave them credit"


@pytest.mark.parametrize("name", GOLDEN_THREAD)
def test_golden_thread_counts_own_entries_that_restate_their_rule(tiny, name):
    task = parse_task(name).task
    for index in range(4):
        sample = task.generate(tiny.tokenizer, 1200, 0.0, seed=0, index=index)
        entries = [_own_entry(task, k, sample, restate=True) for k in range(1, task.num_entries + 1)]
        answer = " " + "\n".join(entries)[len(f"#*# {task.label} 1: ") :] + "\n*** finished"
        assert task.score(sample, answer) == 1.0
        echoed_first = "\n" + _rules(sample) + "\n" + "\n".join(entries[1:]) + "\n*** finished"
        later = [entry for entry, _ in sample.meta["checks"] if entry != 1]
        assert task.score(sample, echoed_first) == pytest.approx(len(later) / len(sample.meta["checks"]))


def test_copied_shares_measure_runs_copied_from_the_source():
    source = "In weeks 1 to 3, every entry mentions rowing. Planning notes from last year."
    texts = ["in WEEKS 1 to 3 every entry", "We went rowing on the lake in week 2.", "In weeks 1 to 3 we rowed a lot"]
    assert scoring.copied_shares([*texts, "too short", ""], source) == pytest.approx([1.0, 0.0, 5 / 9, 0.0, 0.0])


def test_mentions_reads_candidates_in_order_longest_first():
    assert scoring.mentions(("York", "New York", "Leeds"), "new york, then Leeds, then York.") == [
        "New York",
        "Leeds",
        "York",
    ]
    assert scoring.mentions(("Leeds",), "Leedsy Leeds") == ["Leeds"]
    assert scoring.mentions((), "anything") == []


BIO_VALUE_OPS = ["bio_retrieve", "bio_paraphrase", "bio_pronoun", "bio_cite", "bio_idk"]


@pytest.mark.parametrize("name", BIO_VALUE_OPS)
def test_bio_a_list_of_values_earns_no_more_than_one_wrong_guess(tiny, name):
    task = parse_task(name).task
    for index in range(4):
        sample = task.generate(tiny.tokenizer, 1500, 0.5, seed=0, index=index)
        values = candidates(sample.meta["attribute"])
        wrong = next(v for v in values if v != sample.answers[0])
        everything = " " + ", ".join(values) + "."
        if task.op == "idk":
            assert task.score(sample, f" {everything} The answer is not explicitly stated.") == 0.0
            continue
        assert task.score(sample, everything) == task.score(sample, f" {wrong}.") == 0.0
        assert task.score(sample, f" {sample.answers[0]} or {wrong}.") == 0.0
        if task.op == "cite":
            ids = " ".join(f"[{i}]" for i in re.findall(r"Bio \[(\d{4})\]", sample.context))
            assert task.score(sample, f"{everything} {ids}") == 0.0
            assert task.score(sample, f" {sample.answers[0]} {ids}") == 0.5, "the right value, every id cited"


def test_bio_multi_a_list_is_no_better_than_a_guess(tiny):
    task = parse_task("bio_multi").task
    for index in range(4):
        sample = task.generate(tiny.tokenizer, 2000, 0.5, seed=0, index=index)
        values = candidates(sample.meta["attribute"])
        assert task.score(sample, " " + ", ".join(values * len(sample.answers))) == 0.0
        assert task.score(sample, " " + ", ".join(sample.answers) + ", " + ", ".join(values)) == 0.0
        assert task.score(sample, " " + ", ".join(sample.answers) + ".") == 1.0


def test_bio_rank_is_read_in_order_of_first_mention(tiny):
    task = parse_task("bio_rank").task
    for index in range(4):
        sample = task.generate(tiny.tokenizer, 2000, 0.5, seed=0, index=index)
        orders = [list(p) for p in itertools.permutations(sample.answers)]
        wrong_first = sorted(orders, key=lambda order: order == list(sample.answers))
        listing = " " + "; ".join(", ".join(order) for order in wrong_first)
        assert task.score(sample, listing) == 0.0, "every order listed: read as the first one"
        assert task.score(sample, " " + ", ".join(sample.answers) + ", then " + sample.answers[0]) == 1.0


def test_bio_age_diff_and_compare_read_one_answer(tiny):
    age, compare = parse_task("bio_age_diff").task, parse_task("bio_compare").task
    for index in range(4):
        sample = age.generate(tiny.tokenizer, 1500, 0.5, seed=0, index=index)
        numbers = " " + ", ".join(str(k) for k in range(52))
        assert age.score(sample, numbers) == age.score(sample, " 51")
        pair = compare.generate(tiny.tokenizer, 1500, 0.5, seed=0, index=index)
        assert compare.score(pair, " " + " or ".join(pair.meta["people"])) == 0.0


def test_bestanswer_naming_several_candidates_is_no_better_than_a_wrong_guess(tiny):
    task = parse_task("bestanswer").task
    for index in range(3):
        sample = task.generate(tiny.tokenizer, 1500, 0.5, seed=0, index=index)
        labels = re.findall(r"^Answer (A\d{5}):", sample.context, flags=re.MULTILINE)
        assert task.score(sample, " " + " or ".join(labels)) == 0.0
        assert task.score(sample, f" {sample.answers[0]} or {labels[0]}") == 0.0
        assert task.score(sample, f" {sample.answers[0][1:]}") == 1.0, "the bare number names it too"


def test_longgenbench_aligns_answers_by_their_labels(tiny):
    from longreach.tasks.longgenbench import correct_by_index

    task = parse_task("longgenbench").task
    sample = task.generate(tiny.tokenizer, 1500, 0.0, seed=0, index=0)
    gold = sample.answers
    skipped = f" The answer is {gold[0]}.\n" + "\n".join(
        f"Answer_{i}: The answer is {gold[i - 1]}." for i in range(3, len(gold) + 1)
    )
    assert correct_by_index(skipped, gold) == [True, False] + [True] * (len(gold) - 2), "a skipped answer shifts none"
    assert task.score(sample, skipped) == pytest.approx((len(gold) - 1) / len(gold))
    echoed = f" The answer is {gold[0]}.\n\nQuestion_2: 17 apples\nAnswer_2: {gold[1]}"
    assert correct_by_index(echoed, gold)[:2] == [True, True], "an echoed question line ends the answer before it"


def test_longins_reads_only_the_numbers_inside_brackets(tiny):
    task = parse_task("longins_limt").task
    sample = task.generate(tiny.tokenizer, 1500, 0.0, seed=0, index=0)
    wrong = list(sample.answers)
    assert task.score(sample, " The wrong ones are " + ", ".join(wrong) + ".") == 0.0
    assert task.score(sample, f" [{wrong[0]}] and also {wrong[1]}") == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))
