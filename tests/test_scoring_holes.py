"""Scoring holes closed: an echo of a longgen prompt earns nothing."""

import pytest

from longreach.tasks import parse_task, scoring

LONGGEN = ["longgen_diary", "longgen_floors"]
_PROSE = "The light was warm, the talk ran late, and everyone went home tired. "


def _rules(sample) -> str:
    return sample.question.split("Follow these instructions:\n")[1].split("\nWhen all entries")[0]


def _own_entry(task, entry: int, sample, restate: bool) -> str:
    """An entry in the model's own words naming its events; ``restate`` also copies the rules that name it."""
    events = [keyword for k, keyword in sample.meta["checks"] if k == entry]
    rules = [line[2:] for line in _rules(sample).splitlines() if any(e in line for e in events)] if restate else []
    body = " ".join(rules) + f" Today the crew talked about {' and '.join(events) or 'nothing much'} for hours. "
    return f"#*# {task.label} {entry}: " + body + _PROSE * 3


@pytest.mark.parametrize("name", LONGGEN)
def test_longgen_echo_of_the_prompt_or_its_instructions_scores_zero(tiny, name):
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


@pytest.mark.parametrize("name", LONGGEN)
def test_longgen_counts_own_entries_that_restate_their_rule(tiny, name):
    task = parse_task(name).task
    for index in range(4):
        sample = task.generate(tiny.tokenizer, 1200, 0.0, seed=0, index=index)
        entries = [_own_entry(task, k, sample, restate=True) for k in range(1, task.num_entries + 1)]
        answer = " " + "\n".join(entries)[len(f"#*# {task.label} 1: ") :] + "\n*** finished"
        assert task.score(sample, answer) == 1.0
        echoed_first = "\n" + _rules(sample) + "\n" + "\n".join(entries[1:]) + "\n*** finished"
        later = [entry for entry, _ in sample.meta["checks"] if entry != 1]
        assert task.score(sample, echoed_first) == pytest.approx(len(later) / len(sample.meta["checks"]))


def test_copied_share_measures_runs_copied_from_the_source():
    source = "In weeks 1 to 3, every entry mentions rowing. Planning notes from last year."
    assert scoring.copied_share("in WEEKS 1 to 3 every entry", source) == 1.0
    assert scoring.copied_share("We went rowing on the lake in week 2.", source) == 0.0
    assert scoring.copied_share("In weeks 1 to 3 we rowed a lot", source) == pytest.approx(5 / 9)
    assert scoring.copied_share("too short", source) == 0.0
