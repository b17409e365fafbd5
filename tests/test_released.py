"""Released benchmark loaders on our own fixtures in each benchmark's released schema (tests/fixtures/)."""

import json
import shutil
from pathlib import Path

import pytest

import longreach.cli as cli
from longreach import tokens
from longreach.errors import LongreachError
from longreach.tasks import parse_task, suite_tasks
from longreach.tasks.longbench import SUBSETS

FIXTURES = Path(__file__).parent / "fixtures"
SPECS = [
    *(f"longbench:{p.stem}:data={FIXTURES / 'longbench'}" for p in sorted((FIXTURES / "longbench").glob("*.jsonl"))),
    f"longbench_v2:data={FIXTURES / 'longbench_v2'}",
    *(f"leval:{p.stem}:data={FIXTURES / 'leval'}" for p in sorted((FIXTURES / "leval").glob("*.jsonl"))),
    f"lveval:hotpotwikiqa_mixup:data={FIXTURES / 'lveval'}",
    f"lveval:factrecall_en:data={FIXTURES / 'lveval'}",
    f"lveval:loogle_SD_mixup:level=32k:data={FIXTURES / 'lveval'}",
    *(
        f"infinitebench:{p.stem}:data={FIXTURES / 'infinitebench'}"
        for p in sorted((FIXTURES / "infinitebench").glob("*"))
    ),
]


@pytest.mark.parametrize("spec", SPECS)
def test_every_fixture_reads_scores_and_is_cut_to_the_budget(tiny, spec):
    task = parse_task(spec).task
    for index in range(task.num_instances()):
        sample = task.generate(tiny.tokenizer, 4096, 0.0, seed=0, index=index)
        assert sample.meta["truncated_tokens"] == 0, "a short instance is used as is"
        assert sample.meta["realized_tokens"] == tokens.count(tiny.tokenizer, sample.prompt)
        assert task.score(sample, task.reference_answer(sample)) >= 0.95
        if "leval:coursera" not in spec:  # L-Eval reads a letterless answer as its guess "A" (Coursera's gold: A)
            assert task.score(sample, " zzz") <= 0.2, "0 (code: a low edit similarity)"
        budget = sample.meta["realized_tokens"] - 12
        cut = task.generate(tiny.tokenizer, budget, 0.0, seed=0, index=index)
        realized = tokens.count(tiny.tokenizer, cut.prompt)
        assert budget - 2 <= realized <= budget and cut.meta["truncated_tokens"] > 0, "a merge at the cut may cost one"
        assert cut.meta["realized_tokens"] == realized
        assert cut.question == sample.question and cut.context[:20] == sample.context[:20]


def test_longbench_prompt_is_the_released_template(tiny):
    sample = parse_task(f"longbench:narrativeqa:data={FIXTURES / 'longbench'}").task.generate(
        tiny.tokenizer, 4096, 0, 0, 0
    )
    row = json.loads((FIXTURES / "longbench" / "narrativeqa.jsonl").read_text().splitlines()[0])
    assert sample.prompt == SUBSETS["narrativeqa"].template.format(**row)
    assert sample.max_new_tokens == 128 and sample.meta["id"] == row["_id"]
    e = parse_task(f"longbench:hotpotqa_e:data={FIXTURES / 'longbench'}:max_new_tokens=8").task
    assert e.generate(tiny.tokenizer, 4096, 0, 0, 0).meta["length_bucket"] == "0-4k"
    assert e.generate(tiny.tokenizer, 4096, 0, 0, 0).max_new_tokens == 8


def test_longbench_scores_the_first_line_of_few_shot_answers(tiny):
    task = parse_task(f"longbench:triviaqa:data={FIXTURES / 'longbench'}").task
    sample = task.generate(tiny.tokenizer, 4096, 0, 0, 0)
    assert task.score(sample, "\nHarrow Mead\nQuestion: x") == 1.0
    assert task.score(sample, "Harrow Mead Question: x") < 1.0


def test_leval_one_instance_per_instruction_and_unscored_lines_dropped(tiny):
    task = parse_task(f"leval:narrative_qa:data={FIXTURES / 'leval'}").task
    assert task.num_instances() == 2, "two instructions of the f1 line; the human-evaluated line is left out"
    sample = task.generate(tiny.tokenizer, 4096, 0, 0, 1)
    assert sample.question.endswith("Answer this question with 6 words.") and sample.max_new_tokens == 512
    coursera = parse_task(f"leval:coursera:data={FIXTURES / 'leval'}").task
    first = coursera.generate(tiny.tokenizer, 4096, 0, 0, 0)
    assert coursera.score(first, "A") == 0.25 and coursera.score(first, "AC") == 1.0


def test_lveval_and_v2_and_infinitebench_details(tiny):
    v2 = parse_task(f"longbench_v2:data={FIXTURES / 'longbench_v2'}:difficulty=hard:length=short").task
    assert v2.num_instances() == 1
    sample = v2.generate(tiny.tokenizer, 4096, 0, 0, 0)
    assert "(D) eleven" in sample.question and v2.score(sample, "The correct answer is (D)") == 1.0
    lv = parse_task(f"lveval:hotpotwikiqa_mixup:data={FIXTURES / 'lveval'}").task
    sample = lv.generate(tiny.tokenizer, 4096, 0, 0, 0)
    assert lv.score(sample, "She was born in the town") == 0.0, "keyword recall 0 gates the F1"
    assert sample.meta["confusing_facts"] and sample.max_new_tokens == 64
    find = parse_task(f"infinitebench:math_find:data={FIXTURES / 'infinitebench'}").task
    sample = find.generate(tiny.tokenizer, 4096, 0, 0, 0)
    assert sample.prompt.startswith("What is the largest number in the following list?\n\n[3, 17")


def _write(folder: Path, name: str, lines: list[str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n")
    return str(folder)


GOOD = json.loads((FIXTURES / "longbench" / "lcc.jsonl").read_text().splitlines()[0])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", r"lcc.jsonl line 2: not valid JSON"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "answers"}),
            r"lcc.jsonl line 2: field 'answers' is missing",
        ),
        (json.dumps({**GOOD, "context": 3}), r"lcc.jsonl line 2: field 'context' must be a string; got 3"),
        (json.dumps([1]), r"lcc.jsonl line 2: expected a JSON object"),
    ],
)
def test_a_bad_line_names_file_line_field_and_source(tmp_path, line, message):
    data = _write(tmp_path, "lcc.jsonl", [json.dumps(GOOD), line])
    with pytest.raises(LongreachError, match=message) as info:
        parse_task(f"longbench:lcc:data={data}")
    assert "huggingface.co/datasets/THUDM/LongBench" in str(info.value) and "\n" not in str(info.value)


def test_missing_folder_file_or_option_fail_in_one_line(tmp_path):
    with pytest.raises(LongreachError, match=r"give the folder holding narrativeqa.jsonl with data=DIR"):
        parse_task("longbench:narrativeqa")
    with pytest.raises(LongreachError, match=r"L-Eval: no such folder .*github.com/OpenLMLab/LEval"):
        parse_task(f"leval:tpo:data={tmp_path / 'none'}")
    with pytest.raises(LongreachError, match=r"expected the file .*passkey.jsonl .*xinrongzhang2022/InfiniteBench"):
        parse_task(f"infinitebench:passkey:data={tmp_path}")
    row = {"id": 0, "context": "c", "input": "q", "answer": "x", "options": ["a", "b", "c", "d"]}
    data = _write(tmp_path / "ib", "code_debug.jsonl", [json.dumps(row)])
    with pytest.raises(LongreachError, match=r"code_debug.jsonl line 1: field 'answer' must be one of the four"):
        parse_task(f"infinitebench:code_debug:data={data}")


def test_leval_release_layout_and_suites_take_the_folder(tmp_path):
    shutil.copytree(FIXTURES / "leval", tmp_path / "Closed-ended-tasks")
    assert parse_task(f"leval:tpo:data={tmp_path}").task.num_instances() == 1
    specs = suite_tasks(f"infinitebench:data={FIXTURES / 'infinitebench'}")
    assert len(specs) == 8 and all(spec.endswith(f":data={FIXTURES / 'infinitebench'}") for spec in specs)
    with pytest.raises(LongreachError, match=r"suite longbench needs data="):
        suite_tasks("longbench")


def run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_every_loader_runs_end_to_end_on_the_tiny_model(capsys, tmp_path):
    tasks = [
        f"longbench:hotpotqa:data={FIXTURES / 'longbench'}:max_new_tokens=4",
        f"longbench_v2:data={FIXTURES / 'longbench_v2'}:max_new_tokens=4",
        f"leval:coursera:data={FIXTURES / 'leval'}:max_new_tokens=4",
        f"lveval:factrecall_en:data={FIXTURES / 'lveval'}:max_new_tokens=4",
        f"infinitebench:passkey:data={FIXTURES / 'infinitebench'}",
    ]
    argv = ["eval", "--model", "tiny-llama", "--task", ",".join(tasks), "--lengths", "256", "--samples", "1"]
    code, _, err = run([*argv, "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 0, err
    cells = json.loads((tmp_path / "report.json").read_text())["cells"]
    assert len(cells) == 5 and all(cell["realized_tokens"] <= 256 for cell in cells)


def test_a_suite_runs_end_to_end_and_bad_data_is_one_line(capsys, tmp_path):
    suite = f"infinitebench:data={FIXTURES / 'infinitebench'}:max_new_tokens=2"
    argv = ["eval", "--model", "tiny-llama", "--suite", suite, "--lengths", "256", "--samples", "1", "--quiet"]
    code, _, err = run([*argv, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert len(json.loads((tmp_path / "a" / "report.json").read_text())["cells"]) == 8
    bad = ["eval", "--model", "tiny-llama", "--task", f"lveval:factrecall_en:data={tmp_path}", "--lengths", "1k"]
    code, _, err = run([*bad, "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "LV-Eval: expected the file" in err and "factrecall_en_16k.jsonl" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_tasks_lists_the_loaders_and_their_knobs(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")  # a wide terminal: every knob on one line
    code, out, _ = run(["tasks"], capsys)
    assert code == 0
    for name in ("longbench", "longbench_v2", "leval", "lveval", "infinitebench", "subset=(required)"):
        assert name in out
