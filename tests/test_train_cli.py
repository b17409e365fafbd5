"""`longreach train` and `longreach recipes`: thin commands over one library call each (the call patched out)."""

from __future__ import annotations

from pathlib import Path

import pytest

import longreach.cli as cli
from longreach.train.loop import TrainSummary
from longreach.train.recipe import RECIPES


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_train_builds_the_config_and_reports_the_run(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_train(config):
        seen["config"] = config
        return TrainSummary(config.out, config.out / "model", 3, 12288, 2.0, 6144.0, 1.5)

    monkeypatch.setattr(cli, "train", fake_train)
    argv = ["train", "--model", "tiny-llama", "--recipe", "abf:theta=500000", "--data", "tasks:vt+short:passkey"]
    argv += ["--length", "4k", "--steps", "3", "--out", str(tmp_path), "--lora", "r=8", "--lr", "1e-4"]
    argv += ["--batch-tokens", "16k", "--device", "cpu", "--seed", "3", "--save-every", "5", "--resume", "--quiet"]
    code, out, _ = run(argv, capsys)
    assert code == 0
    config = seen["config"]
    assert (config.model, config.recipe, config.data) == ("tiny-llama", "abf:theta=500000", "tasks:vt+short:passkey")
    assert (config.length, config.steps, config.batch_tokens, config.out) == (4096, 3, 16384, Path(tmp_path))
    assert (config.lora, config.lr, config.seed, config.save_every, config.resume, config.quiet) == (
        "r=8",
        1e-4,
        3,
        5,
        True,
        True,
    )
    assert (config.dtype, config.prompt) == ("bf16", "auto")
    assert "6,144 tokens/s" in out and "longreach eval --model" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--recipe", "abff"], "unknown recipe 'abff': did you mean 'abf'?"),
        (["--length", "4k,8k"], "--length takes one token count"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--data", "tasks:vt++text:x"], "empty data source"),
        (["--lora", "r=0"], "r must be >= 1"),
    ],
)
def test_bad_train_input_fails_in_one_line_with_exit_2(capsys, tmp_path, extra, message):
    argv = ["train", "--model", "tiny-llama", "--recipe", "plain", "--data", "tasks:passkey", "--length", "128"]
    argv += ["--steps", "1", "--out", str(tmp_path / "run"), "--quiet"]
    code, _, err = run(argv + extra, capsys)
    assert code == 2
    assert err.startswith("longreach: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written: it failed before loading the model


def test_an_interrupted_train_says_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(config):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "train", interrupted)
    argv = ["train", "--model", "tiny-llama", "--recipe", "plain", "--data", "tasks:passkey", "--length", "128"]
    code, _, err = run(argv + ["--steps", "1", "--out", str(tmp_path)], capsys)
    assert code == 130 and "--resume" in err


def test_recipes_lists_every_registered_recipe_with_its_knobs(capsys):
    code, out, _ = run(["recipes"], capsys)
    assert code == 0
    for name in RECIPES.names():
        assert name in out
    code, out, _ = run(["recipes", "--markdown"], capsys)
    assert out.startswith("| name | description | paper | knobs (default) |")
    assert "| abf |" in out and "theta=500000" in out and "| decompose |" in out
