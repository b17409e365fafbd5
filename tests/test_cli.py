"""The CLI is a thin layer: each command is checked with its library call patched out."""

import json
from pathlib import Path

import pytest
import torch

import longreach.cli as cli
from longreach.runner import RunSummary
from longreach.tasks import FAMILIES, parse_task


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_eval_builds_the_sweep_config(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_run_sweep(config, show_progress):
        seen["config"] = config
        (tmp_path / "report.md").write_text("# longreach report\n| a | b |\n## Figures\n")
        return RunSummary(tmp_path, 12, 0, 12, 0)

    monkeypatch.setattr(cli, "run_sweep", fake_run_sweep)
    code, out, _ = run(
        [
            "eval",
            "--model",
            "tiny-llama",
            "--task",
            "passkey,niah_single_1",
            "--lengths",
            "1k,2k",
            "--depths",
            "0,1",
            "--samples",
            "3",
            "--method",
            "none",
            "--method",
            "none",
            "--out",
            str(tmp_path),
            "--seed",
            "4",
            "--dtype",
            "fp32",
            "--resume",
            "--prompt",
            "raw",
            "--backend",
            "openai:base_url=http://127.0.0.1:9/v1:api=chat",
            "--executor",
            "local:shard=1/2",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    config = seen["config"]
    grid = config.grid
    assert grid.tasks == ("passkey", "niah_single_1") and grid.lengths == (1024, 2048)
    assert grid.depths == (0.0, 1.0) and grid.samples == 3 and config.seed == 4 and config.dtype == "fp32"
    assert grid.methods == ("none", "none") and config.resume and config.out == tmp_path and config.prompt == "raw"
    assert config.backend == "openai:base_url=http://127.0.0.1:9/v1:api=chat" and config.executor == "local:shard=1/2"
    assert "report: " in out and "12 cells run" in out


def test_suites_expand_into_their_tasks(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_run_sweep(config, show_progress):
        seen["config"] = config
        (tmp_path / "report.md").write_text("x")
        return RunSummary(tmp_path, 1, 0, 1, 0)

    monkeypatch.setattr(cli, "run_sweep", fake_run_sweep)
    argv = ["eval", "--model", "m", "--task", "passkey,cwe", "--suite", "ruler-lite", "--lengths", "1k"]
    code, _, _ = run(argv + ["--out", str(tmp_path)], capsys)
    assert code == 0
    tasks = seen["config"].grid.tasks
    assert tasks[:2] == ("passkey", "cwe") and len(tasks) == 12, "cwe is in both and kept once"
    assert {"niah_single_1", "niah_multiquery", "vt", "fwe"} <= set(tasks)
    code, _, _ = run(["eval", "--model", "m", "--suite", "taxonomy", "--lengths", "1k", "--out", str(tmp_path)], capsys)
    families = {parse_task(spec).task.family for spec in seen["config"].grid.tasks}
    generated = {name for name in FAMILIES.names() if not FAMILIES.get(name).released}
    assert families == generated, "one task of every generated family"


def test_the_report_printed_after_an_eval_keeps_its_brackets(monkeypatch, capsys, tmp_path):
    (tmp_path / "report.md").write_text("| passkey | none [chat] | knorm [question-agnostic] |\n## Figures\n")
    monkeypatch.setattr(cli, "run_sweep", lambda config, show_progress: RunSummary(tmp_path, 1, 0, 1, 0))
    code, out, _ = run(["eval", "--model", "m", "--task", "passkey", "--lengths", "1k", "--out", str(tmp_path)], capsys)
    assert code == 0 and "none [chat]" in out and "knorm [question-agnostic]" in out, "not read as console markup"


def test_eval_with_failed_cells_exits_one(monkeypatch, capsys, tmp_path):
    (tmp_path / "report.md").write_text("x")
    monkeypatch.setattr(cli, "run_sweep", lambda config, show_progress: RunSummary(tmp_path, 2, 0, 2, 1))
    code, out, _ = run(["eval", "--model", "m", "--task", "passkey", "--lengths", "1k", "--out", str(tmp_path)], capsys)
    assert code == 1 and "1 failed" in out


def test_an_interrupted_eval_says_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(config, show_progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_sweep", interrupted)
    code, _, err = run(["eval", "--model", "m", "--task", "passkey", "--lengths", "1k", "--out", str(tmp_path)], capsys)
    assert code == 130 and "--resume" in err


def test_report_and_generate_call_the_library(monkeypatch, capsys, tmp_path):
    calls = []

    def fake_render(folders, out, threshold, baseline):
        calls.append((folders, out, threshold, baseline))
        (tmp_path / "report.md").write_text("tables\n## Figures\n")
        return tmp_path / "report.html"

    monkeypatch.setattr(cli, "render_report", fake_render)
    monkeypatch.setattr(cli, "export_instances", lambda config, path: calls.append((config, path)) or 6)
    assert run(["report", str(tmp_path), "--threshold", "0.5"], capsys)[0] == 0
    code, out, _ = run(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--baseline", "yarn:factor=4.0"], capsys)
    assert code == 0 and "tables" in out
    code, out, _ = run(
        [
            "generate",
            "--model",
            "tiny-llama",
            "--task",
            "passkey",
            "--lengths",
            "1k",
            "--depths",
            "0,0.5,1",
            "--samples",
            "2",
            "--out",
            str(tmp_path / "x.jsonl"),
        ],
        capsys,
    )
    assert code == 0 and "6 instances written" in out
    assert calls[0] == ([tmp_path], None, 0.5, None)
    assert calls[1] == ([tmp_path / "a", tmp_path / "b"], tmp_path / "merged_a+b", None, "yarn:factor=4")
    config, path = calls[2]
    assert config.grid.depths == (0.0, 0.5, 1.0) and config.grid.samples == 2 and path == tmp_path / "x.jsonl"


EVAL = ["eval", "--model", "tiny-llama", "--task", "passkey", "--lengths", "1k", "--out", "o"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--model", "tiny-llama", "--task", "passkey", "--lengths", "4q", "--out", "o"], "bad length '4q'"),
        ([*EVAL, "--depths", "1.5"], "depth 1.5 is outside [0, 1]"),
        ([*EVAL, "--samples", "x"], "Invalid value for '--samples'"),
        (["eval", "--model", "tiny-llama", "--lengths", "1k", "--out", "o"], "give --task (e.g. passkey) or --suite"),
        (
            ["eval", "--model", "tiny-llama", "--suite", "rulerlite", "--lengths", "1k", "--out", "o"],
            "unknown suite 'rulerlite': did you mean 'ruler-lite'?",
        ),
        (["evl"], "No such command 'evl'"),
        ([*EVAL, "--backend", "hff"], "unknown backend 'hff': did you mean 'hf'?"),
        ([*EVAL, "--backend", "openai"], "openai: base_url must start with http:// or https://"),
        ([*EVAL, "--executor", "ray:workerz=2"], "ray: unknown parameter 'workerz'; did you mean 'workers'"),
        ([*EVAL, "--prompt", "chatty"], "unknown prompt format 'chatty'; valid: auto, raw, chat"),
        (["study", "run", "nowhere.yaml", "--out", "o"], "no study file nowhere.yaml"),
    ],
)
def test_bad_input_is_one_line_and_exit_two(capsys, argv, message):
    code, _, err = run(argv, capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_library_errors_are_one_line_too(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "c", "question": "q", "answers": ["a"]}\n{oops\n')
    code, _, err = run(
        ["eval", "--model", "tiny-llama", "--task", f"jsonl:{bad}", "--lengths", "1k", "--out", str(tmp_path / "o")],
        capsys,
    )
    assert code == 2 and "line 2: not valid JSON" in err and err.count("\n") == 1
    code, _, err = run(
        ["eval", "--model", "tiny-llama", "--task", "passkey", "--lengths", "64", "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "smaller than the prompt's fixed part" in err


@pytest.mark.parametrize("command", ["models", "methods", "tasks", "backends"])
def test_listings_read_the_registries(capsys, command):
    code, out, _ = run([command], capsys)
    assert code == 0
    expected = {
        "models": ["smollm2-135m", "tiny-llama", "gemma3-270m"],
        "methods": ["none"],
        "tasks": ["passkey", "niah_multikey_1", "jsonl"],
        "backends": ["hf", "openai", "local", "ray", "base_url"],
    }[command]
    for name in expected:
        assert name in out


def test_end_to_end_on_the_tiny_model(capsys, tmp_path):
    """No patching: the real command on tiny-llama writes a report (its scores are random-model zeros)."""
    code, out, _ = run(
        [
            "eval",
            "--model",
            "tiny-llama",
            "--task",
            "passkey",
            "--lengths",
            "512",
            "--depths",
            "0.5",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capsys,
    )
    assert code == 0
    assert json.loads((tmp_path / "report.json").read_text())["cells"][0]["realized_tokens"] == 512
    assert str(Path(tmp_path / "report.html").resolve()) in out.replace("\n", "")


def test_the_readme_methods_table_is_the_registry(capsys):
    """The registry is the only list: the README's table is `longreach methods --markdown`, verbatim."""
    code, out, _ = run(["methods", "--markdown"], capsys)
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert code == 0
    for line in out.strip().splitlines():
        assert line in readme, f"README is missing: {line}"


def test_bad_or_missing_device_is_one_line(capsys, tmp_path):
    base = ["eval", "--model", "tiny-llama", "--task", "passkey", "--lengths", "1k", "--out", str(tmp_path / "o")]
    code, _, err = run(base + ["--device", "tpu"], capsys)
    assert code == 2 and "unknown device 'tpu'; valid: cpu, cuda, cuda:N" in err and err.count("\n") == 1
    if not torch.cuda.is_available():
        code, _, err = run(base + ["--device", "cuda"], capsys)
        assert code == 2 and "torch sees no CUDA GPU here" in err and err.count("\n") == 1
