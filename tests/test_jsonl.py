import json

import pytest

from longreach import tokens
from longreach.errors import LongreachError
from longreach.runner import SweepConfig
from longreach.runner.export import CANARY, export_instances
from longreach.tasks import parse_task


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
    config = SweepConfig(
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
    assert all(line["canary"] == CANARY for line in lines)
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
