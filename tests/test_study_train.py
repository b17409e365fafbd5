"""Studies that train: each trained model is trained once (resumable, shards never train it twice), every stage
that names it runs on its folder into STAGE@NAME with rows labelled (NAME), and the merged report holds a table of
what each training run cost; mistakes in the train section are one line."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from longreach.errors import LongreachError
from longreach.results import ResultsStore
from longreach.study import load_study, report_study, run_study
from longreach.study import run as run_module
from longreach.study.training import trained_dir, training_table

STUDY = """
name: tiny_train
description: training on the random tiny model
model: tiny-llama
dtype: fp32
prompt: raw
baseline: none
train:
  settings: {data: "tasks:passkey", length: 128, steps: 2, batch_tokens: 256}
  models:
    abf: {recipe: "abf:theta=40000"}
    plain: {recipe: plain, steps: 3}
stages:
  - name: short
    tasks: [passkey]
    lengths: [200]
    depths: [0.5]
    methods: [none, "linear:factor=3"]
    models: [base, abf]
  - name: plain_only
    tasks: [passkey]
    lengths: [200]
    depths: [0.5]
    models: [plain]
"""


def write(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_study_trains_its_models_once_and_evaluates_them_next_to_the_base_model(tmp_path):
    study = load_study(write(tmp_path))
    out = tmp_path / "out"
    outcomes = run_study(study, out, show_progress=False)
    assert [(o.name, o.summary.ran) for o in outcomes] == [("short", 2), ("short@abf", 2), ("plain_only@plain", 1)]
    for name, steps in (("abf", 2), ("plain", 3)):
        record = json.loads((trained_dir(out, name) / "train.json").read_text())
        assert record["steps"] == steps and (trained_dir(out, name) / "model" / "config.json").is_file()
    config = json.loads((trained_dir(out, "abf") / "model" / "config.json").read_text())
    assert config["rope_parameters"]["rope_theta"] == 40000, "the stage loads the abf-trained folder"
    with ResultsStore(out / "short@abf") as store:
        assert store.meta()["label"] == "abf" and store.meta()["model"] == "abf"
    report_study(study, out)
    report = json.loads((out / "report.json").read_text())
    rows = {c["row"] for c in report["cells"]}
    assert rows == {"none", "linear:factor=3", "none (abf)", "linear:factor=3 (abf)", "none (plain)"}
    assert report["training"]["plain"]["steps"] == 3 and "losses" in report["training"]["abf"]
    ratios = {s["row"]: s["ratio_to_baseline"] for s in report["summary"]}
    assert ratios["none"] == {m: 1.0 for m in ratios["none"]} and "peak_rss_mb" in ratios["none"]
    for row in ("none (abf)", "linear:factor=3 (abf)", "none (plain)"):
        assert "peak_rss_mb" in ratios[row], f"{row} is divided by the untrained model's none row"
    markdown = (out / "report.md").read_text()
    assert "Study tiny_train: trained models" in markdown and "| abf | abf:theta=40000" in markdown
    assert "| short@abf | 2 |" in markdown, "each stage and model is a row of the stage table"
    assert "| passkey | none (abf) | 200 |" in markdown, "the ratio table holds the trained model's none row"
    stamp = (trained_dir(out, "abf") / "train.json").stat().st_mtime_ns
    again = run_study(study, out, show_progress=False)
    assert [o.summary.ran for o in again] == [0, 0, 0], "a finished study resumes to nothing"
    assert (trained_dir(out, "abf") / "train.json").stat().st_mtime_ns == stamp, "not trained twice"


def test_a_trained_model_whose_settings_changed_is_refused_not_silently_reused(tmp_path):
    out = tmp_path / "out"
    run_study(load_study(write(tmp_path)), out, stages=["plain_only"], show_progress=False)
    changed = load_study(write(tmp_path, STUDY.replace("plain: {recipe: plain, steps: 3}", "plain: {recipe: plain}")))
    with pytest.raises(LongreachError, match=r"finished training run with steps=3, the study now says 2"):
        run_study(changed, out, stages=["plain_only"], show_progress=False)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("models: [base, abf]", "models: [base, afb]"), r"stage short: unknown model 'afb'; valid: base, abf, plain"),
        (('abf: {recipe: "abf:theta=40000"}', "abf: {steps: 2}"), r"train.models.abf: missing 'recipe'"),
        (('abf: {recipe: "abf:theta=40000"}', "abf: {recipe: abff}"), r"train.models.abf: unknown recipe 'abff'"),
        (('{data: "tasks:passkey",', '{data: "tasks:paskey",'), r"train.models.abf: .*paskey"),
        (("length: 128, steps", "lenght: 128, steps"), r"train.settings: unknown key 'lenght'; did you mean 'length'"),
        (("    models: [plain]", "    models: [plain]\n    prune: {stage: short}"), r"stage plain_only: a prune rule"),
        (("    plain: {recipe: plain, steps: 3}", "    base: {recipe: plain}"), r"train.models.base: expected"),
    ],
)
def test_mistakes_in_the_train_section_are_one_line(tmp_path, edit, message):
    assert edit[0] in STUDY
    with pytest.raises(LongreachError, match=message):
        load_study(write(tmp_path, STUDY.replace(*edit)))


def test_a_data_folder_is_checked_when_the_model_trains_not_when_the_study_is_read(tmp_path):
    """A study file written for another machine parses (report, validation) before its corpus exists there."""
    text = STUDY.replace('data: "tasks:passkey"', f'data: "tasks:passkey+text:{tmp_path / "corpus"}"')
    study = load_study(write(tmp_path, text))
    with pytest.raises(LongreachError, match=r"text: no such folder .*corpus"):
        run_study(study, tmp_path / "out", stages=["plain_only"], show_progress=False)


def test_models_runs_only_the_named_models_of_each_stage_so_a_study_goes_model_by_model(tmp_path):
    study = load_study(write(tmp_path))
    out = tmp_path / "out"
    outcomes = run_study(study, out, models=["abf"], show_progress=False)
    assert [(o.name, o.summary.ran) for o in outcomes] == [("short@abf", 2)], "base and plain left for later"
    assert not trained_dir(out, "plain").exists(), "a model not asked for is not trained"
    rest = run_study(study, out, show_progress=False)
    assert [(o.name, o.summary.ran) for o in rest] == [("short", 2), ("short@abf", 0), ("plain_only@plain", 1)]
    with pytest.raises(LongreachError, match=r"study tiny_train: no model 'abff'; did you mean 'abf'"):
        run_study(study, out, models=["abff"], show_progress=False)


def test_a_stage_killed_midway_is_still_labelled_with_its_model(tmp_path, monkeypatch):
    """A merged report must not show a trained model's partial stage as the base model's rows."""
    study = load_study(write(tmp_path))
    out = tmp_path / "out"
    real_sweep = run_module.run_sweep

    def killed_after_one_cell(config, show_progress=True):
        if config.out.name != "short@abf":
            return real_sweep(config, show_progress=show_progress)
        one_cell = dataclasses.replace(config, grid=dataclasses.replace(config.grid, methods=config.grid.methods[:1]))
        real_sweep(one_cell, show_progress=show_progress)
        raise KeyboardInterrupt  # the process dies after one cell of the stage

    monkeypatch.setattr(run_module, "run_sweep", killed_after_one_cell)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, stages=["short"], show_progress=False)
    report_study(study, out)
    rows = {c["row"] for c in json.loads((out / "report.json").read_text())["cells"]}
    assert rows == {"none", "linear:factor=3", "none (abf)"}, "the partial stage's cell is the abf model's"


def test_the_training_table_compares_the_first_fifth_of_the_losses_with_the_last(tmp_path):
    study = load_study(write(tmp_path))
    out = tmp_path / "out"
    record = {"recipe": "abf:theta=40000", "steps": 10, "tokens": 2560, "train_seconds": 5.0, "tokens_per_s": 512.0,
              "peak_rss_mb": 300.0, "losses": [1.0, 7.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 2.0, 1.0],
              "provenance": {"cpu": "Some Xeon"}}  # fmt: skip
    trained_dir(out, "abf").mkdir(parents=True)
    (trained_dir(out, "abf") / "train.json").write_text(json.dumps(record))
    table = training_table(study, out)
    assert table.rows[0][-2] == "4.000 -> 1.500", "a noisy first step alone would read 1.000 -> 1.500"
    assert table.rows[0][-1] == "Some Xeon", "rows trained on different machines are told apart"
    assert table.rows[1][3] == "not trained"
