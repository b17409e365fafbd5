"""Independent brute-force checkers: every family's gold answer recomputed from the prompt text alone.

Each checker (``prompt_oracles.py``) reads only ``sample.prompt`` and recomputes the answer by brute force; it
never looks at the generator's internal state, its ``meta`` or its gold, which it is then compared with. The
per-family "perfect answer" contract test builds its answer from the gold, so a wrong gold would pass there;
these checkers are what make the gold trustworthy.
"""

import pytest

from longreach.tasks import TASKS, parse_task
from prompt_oracles import CHECKERS

GENERATED = [name for name in TASKS.names() if TASKS.get(name).family.generated]
COORDINATES = [(0.0, 0), (0.5, 1), (1.0, 2)]  # (depth, index)


def test_every_family_has_a_checker():
    assert {TASKS.get(name).family.family for name in GENERATED} == set(CHECKERS)


@pytest.mark.parametrize("name", GENERATED)
def test_gold_equals_the_brute_force_answer_from_the_prompt(tiny, name):
    task = parse_task(name).task
    check, compare = CHECKERS[task.family]
    for depth, index in COORDINATES:
        sample = task.generate(tiny.tokenizer, 1500, depth, seed=4, index=index)
        expected = check(sample.prompt)
        if compare == "ordered":
            assert expected == sample.answers
        elif compare == "multiset":
            assert sorted(expected) == sorted(sample.answers)
        else:
            assert set(expected) == set(sample.answers) and len(expected) == len(sample.answers)
