"""auto:TARGET: calibration by teacher-forced answer likelihood, resolution in a sweep, the CLI command."""

import dataclasses
import json

import torch

import longreach.cli as cli
from helpers import run_config
from longreach import tokens
from longreach.methods import auto as auto_module
from longreach.methods import parse_stack
from longreach.methods.auto import answer_nll, calibrate, candidates, resolve
from longreach.runner import run_sweep


def test_candidates_scale_with_the_target():
    assert candidates(2048, 2048) == ["none"]
    specs = candidates(20000, 8192)
    assert specs[:2] == ["yarn:factor=2.5", "ntk:factor=2.5"]
    assert "selfextend:target=20000" in specs and "none" in specs
    for spec in specs:
        parse_stack(spec)


def test_answer_nll_is_the_teacher_forced_loss(tiny):
    prompt, answer = "The pass key is 123. What is the pass key? The pass key is", " 123."
    ids = tokens.encode(tiny.tokenizer, prompt)
    answer_ids = tiny.tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = tiny.model(torch.tensor([ids + answer_ids])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits[len(ids) - 1 : -1], torch.tensor(answer_ids))
    assert abs(answer_nll(tiny, parse_stack("none"), prompt, answer) - float(expected)) < 1e-4


def test_calibration_picks_the_lowest_nll_and_resolution_keeps_other_methods(tiny, monkeypatch):
    result = calibrate(tiny, 2600)
    assert set(result.nll) == set(candidates(2600, 2048))
    assert result.chosen == min(result.nll, key=result.nll.get)
    stack, again = resolve(parse_stack("auto:2600"), tiny)
    assert stack.repr == parse_stack(result.chosen).repr and again.chosen == result.chosen


def test_a_sweep_calibrates_once_and_resume_reuses_the_choice(tiny, tmp_path, monkeypatch):
    calls = []
    real = auto_module.calibrate
    monkeypatch.setattr(auto_module, "calibrate", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    config = run_config(
        model="tiny-llama",
        tasks=("passkey",),
        lengths=(2600,),
        out=tmp_path,
        depths=(0.5,),
        methods=("auto:2600",),
        dtype="fp32",
        seed=11,
    )
    run_sweep(config, show_progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["cells"][0]["method"] == "auto:target=2600"
    assert report["calibration"]["auto:target=2600"]["resolved"] in set(candidates(2600, 2048)) | {"none"}
    resumed = dataclasses.replace(config, grid=dataclasses.replace(config.grid, samples=2), resume=True)
    run_sweep(resumed, show_progress=False)
    assert calls == [2600], "calibrated once; the resumed run read the choice from the store"


def test_calibrate_command_prints_a_reusable_spec(monkeypatch, capsys):
    result = auto_module.Calibration(32768, "yarn:factor=4", {"yarn:factor=4": 0.5, "none": 3.0})
    monkeypatch.setattr(cli, "load_model", lambda model, dtype: "loaded")
    monkeypatch.setattr(cli, "cached_calibration", lambda loaded, target, seed: result)
    try:
        cli.main(["calibrate", "--model", "smollm2-135m", "--target", "32k"])
    except SystemExit as exit_info:
        assert exit_info.code == 0
    out = capsys.readouterr().out
    assert "chosen: yarn:factor=4" in out and "--method yarn:factor=4" in out
