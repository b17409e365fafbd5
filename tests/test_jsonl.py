import json

import pytest

from helpers import run_config
from longreach import tokens
from longreach.errors import LongreachError
from longreach.runner.export import export_instances
from longreach.tasks import TASKS, parse_task, scoring
from longreach.tasks.jsonl import CANARY, instance_line


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_reads_instances_and_scores_by_alias(tiny, tmp_path):
    path = write_lines(
        tmp_path / "qa.jsonl",
        [
            json.dumps({"context": "Ada lives in Paris.", "question": "Where does Ada live?", "answers": ["Paris"]}),
            "",
            json.dumps({"context": "x", "question": "q", "answers": "y", "match": "all", "id": "b"}),
        ],
    )
    task = parse_task(f"jsonl:{path}").task
    assert task.num_instances() == 2
    sample = task.generate(tiny.tokenizer, 1000, 0.0, seed=0, index=0)
    assert sample.prompt == "Ada lives in Paris.\n\nWhere does Ada live?"
    assert sample.meta["truncated_tokens"] == 0
    assert sample.meta["realized_tokens"] == tokens.count(tiny.tokenizer, sample.prompt)
    assert task.score(sample, "In Paris.") == 1.0 and task.score(sample, "Parisian") == 0.0
    second = task.generate(tiny.tokenizer, 1000, 0.0, seed=0, index=1)
    assert second.answers == ("y",) and second.meta["id"] == "b"


def test_long_context_is_cut_in_the_middle_to_the_exact_length(tiny, tmp_path):
    context = " ".join(f"word{i}" for i in range(3000))
    path = write_lines(tmp_path / "long.jsonl", [json.dumps({"context": context, "question": "Q?", "answers": ["a"]})])
    sample = parse_task(f"jsonl:{path}").task.generate(tiny.tokenizer, 512, 0.0, seed=0, index=0)
    assert tokens.count(tiny.tokenizer, sample.prompt) == 512
    assert sample.meta["truncated_tokens"] > 0
    assert sample.context.startswith("word0 word1") and sample.context.rstrip().endswith("word2999")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"context": "c", "question": "q", "answers": ["a"]', r"line 2: not valid JSON"),
        ('["a"]', r"line 2: expected a JSON object"),
        ('{"context": 3, "question": "q", "answers": ["a"]}', r"line 2: 'context' must be a string"),
        ('{"context": "c", "question": "q", "answers": []}', r"line 2: 'answers' must be a string or a non-empty list"),
        ('{"context": "c", "question": "q", "answers": "a", "match": "most"}', r"line 2: 'match' must be"),
    ],
)
def test_bad_lines_are_reported_with_their_number(tmp_path, line, message):
    good = json.dumps({"context": "c", "question": "q", "answers": ["a"]})
    path = write_lines(tmp_path / "bad.jsonl", [good, line])
    with pytest.raises(LongreachError, match=message):
        parse_task(f"jsonl:{path}")


def test_missing_file_and_missing_path_fail_clearly(tmp_path):
    with pytest.raises(LongreachError, match="no such file"):
        parse_task(f"jsonl:{tmp_path / 'nope.jsonl'}")
    with pytest.raises(LongreachError, match="give a file"):
        parse_task("jsonl")


def test_exported_instances_read_back_into_the_same_prompts(tiny, tmp_path):
    config = run_config(
        model="tiny-llama",
        tasks=("passkey", "niah_multivalue"),
        lengths=(600, 900),
        out=tmp_path,
        depths=(0.0, 1.0),
        samples=2,
        seed=5,
    )
    path = tmp_path / "instances.jsonl"
    assert export_instances(config, path) == 2 * 2 * 2 * 2
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(line["canary"] == CANARY and line["scorer"] == line["task"] for line in lines)
    original = parse_task("niah_multivalue").task.generate(tiny.tokenizer, 900, 1.0, seed=5, index=1)
    exported = next(
        i
        for i, line in enumerate(lines)
        if (line["task"], line["context_length"], line["depth"], line["index"]) == ("niah_multivalue", 900, 1.0, 1)
    )
    task = parse_task(f"jsonl:{path}").task
    again = task.generate(tiny.tokenizer, 900, 0.0, seed=0, index=exported)
    assert again.prompt == original.prompt
    assert again.answers == original.answers
    assert task.score(again, " " + " ".join(original.answers[:2])) == 0.5, "multi-value lines keep match=all"


GENERATED = [name for name in TASKS.names() if TASKS.get(name).family.generated]


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    """One exported line per registered task (index 1 at 1000 tokens), written to a file and read back."""
    samples = {name: parse_task(name).task.generate(tiny.tokenizer, 1000, 0.5, seed=3, index=1) for name in GENERATED}
    path = tmp_path_factory.mktemp("export") / "all.jsonl"
    lines = [instance_line(s, name, context_length=1000, depth=0.5, index=1, seed=3) for name, s in samples.items()]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return samples, parse_task(f"jsonl:{path}").task


def _predictions(task, sample, other):
    """The reference, wrong answers, echoes and partly right answers (where the family gives partial credit)."""
    answers = list(sample.answers)
    return [
        task.reference_answer(sample),
        task.reference_answer(other),
        " 0000000 nothing-here",
        sample.question + sample.answer_prefix,
        sample.prompt,
        " " + answers[0],
        " " + ", ".join(answers[: max(1, len(answers) // 2)]),
        " " + ", ".join(reversed(answers)),
        " [" + ", ".join(str(k) for k in range(1, len(answers) + 1)) + "]",
    ]


@pytest.mark.parametrize("position", range(len(GENERATED)))
def test_an_exported_line_reads_back_with_its_family_scorer(tiny, exported, position):
    samples, jsonl = exported
    name = GENERATED[position]
    family, original = parse_task(name).task, samples[name]
    again = jsonl.generate(tiny.tokenizer, 1000, 0.0, seed=0, index=position)
    assert again.prompt == original.prompt and again.answer_prefix == original.answer_prefix
    assert again.answers == original.answers and again.stop == original.stop
    assert again.max_new_tokens == original.max_new_tokens
    assert again.meta["scorer"] == name and again.meta["random_baseline"] == original.meta["random_baseline"]
    other = family.generate(tiny.tokenizer, 1000, 0.5, seed=3, index=2)
    for prediction in _predictions(family, original, other):
        assert jsonl.score(again, prediction) == family.score(original, prediction), prediction[:80]
    assert jsonl.score(again, family.reference_answer(original)) == 1.0


def test_tsort_lines_no_longer_accept_any_listing_of_the_labels(tiny, exported):
    samples, jsonl = exported
    again = jsonl.generate(tiny.tokenizer, 1000, 0.0, seed=0, index=GENERATED.index("tsort"))
    assert jsonl.score(again, " [1, 2, 3, 4]") == 0.0 != scoring.match_all(again.answers, " [1, 2, 3, 4]")


def test_instance_line_names_the_scorer_and_the_coordinates(tiny):
    sample = parse_task("needle:num_keys=4").task.generate(tiny.tokenizer, 700, 0.5, seed=0, index=0)
    line = instance_line(sample, "needle:num_keys=4", context_length=700, depth=0.5)
    assert list(line)[:3] == ["task", "context_length", "depth"]
    assert line["scorer"] == "needle:num_keys=4" and line["canary"] == CANARY
    assert line["answer_prefix"] == sample.answer_prefix and line["stop"] == list(sample.stop)
    assert line["meta"]["random_baseline"] == sample.meta["random_baseline"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"scorer": "tsortt"}, r"line 1: scorer 'tsortt': .*did you mean 'tsort'"),
        ({"scorer": "jsonl"}, r"line 1: scorer 'jsonl' must name a generated task"),
        ({"scorer": 3}, r"line 1: 'scorer' must be a task spec string"),
        ({"stop": "\n"}, r"line 1: 'stop' must be a list of non-empty strings"),
        ({"meta": [1]}, r"line 1: 'meta' must be a JSON object"),
    ],
)
def test_bad_scorer_stop_or_meta_fail_loudly(tmp_path, extra, message):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"context": "c", "question": "q", "answers": "a", **extra})])
    with pytest.raises(LongreachError, match=message):
        parse_task(f"jsonl:{path}")
