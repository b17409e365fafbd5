"""Every family's stated random guess, scored by the family, averages to the ``random_baseline`` it records.

The guess is the one each family's docstring names (a uniform value of the asked kind, a random chain, a
random order, ...), drawn from what the prompt shows. Scores lie in [0, 1], so the variance of one guess's
score is at most b(1 - b) for mean b; the mean of N guesses is accepted within 4 standard errors of that
bound plus 2/N (for baselines near 0, where one lucky hit in N must not fail the test): a correct baseline
fails with probability below 1e-4, and guesses are seeded, so the test is deterministic.
"""

import json
import math
import random
import re

import pytest

from longreach.tasks import TASKS, filler, parse_task, words
from longreach.tasks.biographies import candidates
from prompt_oracles import CANDIDATE, EXAM_QUESTION, NAME, check_threading, variable_chains

GENERATED = [name for name in TASKS.names() if TASKS.get(name).family.generated]
SAMPLES, GUESSES = 6, 250


def _passkey(task, sample, rng):
    return " " + words.number(rng, task.digits)


def _needle(task, sample, rng):
    return " " + words.VALUE_MAKERS[task.value_type](rng)


def _threading(task, sample, rng):
    values = re.findall(r'"[^"\n]+": "([^"\n]+)",', sample.context)
    assert len(check_threading(sample.prompt)) == len(sample.answers)
    return " " + ", ".join(rng.sample(values, len(sample.answers)))


def _variables(task, sample, rng):
    chains = sorted(variable_chains(sample.prompt).values())
    return " " + " ".join(rng.choice(chains))


def _aggregation(task, sample, rng):
    if task.mode == "common":
        distinct = sorted(set(sample.context.split()))
    else:
        distinct = sorted(set(sample.context.split("\n", 1)[1].split()) - {"...."})
    return " " + ", ".join(rng.sample(distinct, len(sample.answers)))


def _biographies(task, sample, rng):
    names = re.findall(NAME, sample.question)
    values = candidates(sample.meta["attribute"])
    if task.op in ("retrieve", "idk"):
        return f" {rng.choice(values)}."
    if task.op == "cite":
        ids = re.findall(r"Bio \[(\d{4})\]", sample.context)
        return f" {rng.choice(values)} [{rng.choice(ids)}]"
    if task.op == "multi_retrieve":
        return " " + ", ".join(rng.choice(values) for _ in names) + "."
    if task.op == "age_diff":
        return f" {rng.randint(0, 51)}"
    if task.op == "compare":
        return f" {rng.choice(names)}."
    rng.shuffle(names)
    return " " + ", ".join(names) + "."


def _database(task, sample, rng):
    wines = sorted(set(re.findall(r"Chateau \w+", sample.context)))
    regions = sorted(set(re.findall(r"(?:grown in|vintage from|comes from) (\w+)", sample.context)))
    if task.query in ("filter", "join"):
        return " " + ", ".join(wines)
    if task.query == "count":
        return f" {rng.randint(0, len(wines))}"
    if task.query in ("max", "min"):
        return f" {rng.choice(wines)}"
    return " " + "\n".join(f"{region}: {rng.randint(0, len(wines))}" for region in regions)


def _ordering(task, sample, rng):
    labels = list(range(1, task.n_segments + 1))
    rng.shuffle(labels)
    return " " + json.dumps(labels)


def _confusers(task, sample, rng):
    statement = r"The town of \w+ was [a-z ]+? in (\d{4}) by (.+?) on the banks of the (\w+) river\."
    statements = re.findall(statement, sample.context)
    column = {"year": 0, "founder": 1, "river": 2}[sample.meta["fact"]]
    return " " + rng.choice(statements)[column]


def _golden_thread(task, sample, rng):
    entries = [" ".join(filler.prose_sentence(rng) for _ in range(4)) for _ in range(task.num_entries)]
    return "\n".join(text if k == 1 else f"#*# {task.label} {k}: {text}" for k, text in enumerate(entries, 1))


def _longgenbench(task, sample, rng):
    answers = [f"Answer_{i}: The answer is {rng.randint(1, 999)}." for i in range(1, len(sample.answers) + 1)]
    return " " + "\n".join(answers)[len("Answer_1: ") :]


def _bestanswer(task, sample, rng):
    labels = [label for label, _, _ in re.findall(CANDIDATE, sample.context, flags=re.MULTILINE)]
    return f" {rng.choice(labels)}"


def _longins(task, sample, rng):
    numbers = [found[3] for found in re.findall(EXAM_QUESTION, sample.context, flags=re.MULTILINE)]
    return " [" + ", ".join(rng.sample(numbers, task.n_errors)) + "]"


GUESS = {
    "passkey": _passkey,
    "needle": _needle,
    "threading": _threading,
    "variables": _variables,
    "aggregation": _aggregation,
    "biographies": _biographies,
    "database": _database,
    "ordering": _ordering,
    "confusers": _confusers,
    "golden_thread": _golden_thread,
    "longgenbench": _longgenbench,
    "bestanswer": _bestanswer,
    "longins": _longins,
}


def test_every_family_has_a_stated_guess():
    assert {TASKS.get(name).family.family for name in GENERATED} == set(GUESS)


LVEVAL_CONFUSERS = [
    "confusers:confusing_facts=3:scorer=keyword_f1",
    "confusers:confusing_facts=3:scorer=keyword_f1:fact=founder",
    "confusers:confusing_facts=2:fact=founder",
]


@pytest.mark.parametrize("name", [*GENERATED, "passkey:digits=1", "tsort:n_segments=2", *LVEVAL_CONFUSERS])
def test_the_random_guess_scores_the_recorded_baseline(tiny, name):
    task = parse_task(name).task
    rng = random.Random(f"guess|{name}")
    scores, baselines = [], []
    for index in range(SAMPLES):
        sample = task.generate(tiny.tokenizer, 1500, 0.5, seed=9, index=index)
        baselines.append(sample.meta["random_baseline"])
        scores += [task.score(sample, GUESS[task.family](task, sample, rng)) for _ in range(GUESSES)]
    n, mean, expected = len(scores), sum(scores) / len(scores), sum(baselines) / len(baselines)
    tolerance = 4 * math.sqrt(expected * (1 - expected) / n) + 2 / n
    assert abs(mean - expected) <= tolerance, f"mean {mean:.4f} vs stated baseline {expected:.4f}"
