"""Studies: YAML stages run as resumable runs, prune rules between stages, shards filling one study, one merged
report; every mistake in the file is one line naming the stage and the bad value."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import longreach.cli as cli
from longreach.errors import LongreachError
from longreach.results import ResultsStore
from longreach.study import load_study, recorded_study, report_study, run_study
from longreach.tasks import text as text_module

STUDY = """
name: tiny
description: a study on the random tiny model
model: tiny-llama
dtype: fp32
prompt: raw
baseline: none
rows:
  rope: [none, "linear:factor=3", "yarn:factor=3"]
stages:
  - name: short
    tasks: [passkey]
    lengths: [300]
    depths: &two [0.2, 0.8]
    methods: rope
  - name: long
    tasks: [passkey]
    lengths: [500]
    depths: *two
    methods: rope
    prune: {stage: short, below: 0.5, keep: [linear:factor=3.0]}
  - name: timing
    label: timing
    tasks: [passkey]
    lengths: [300]
    depths: [0.5]
    methods: [none, "linear:factor=3"]
    interleave: true
"""


def write(tmp_path: Path, text: str = STUDY) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_study_runs_its_stages_prunes_and_merges_one_report(tmp_path):
    study = load_study(write(tmp_path))
    outcomes = run_study(study, tmp_path / "out", show_progress=False)
    assert [o.name for o in outcomes] == ["short", "long", "timing"]
    assert [o.summary.ran for o in outcomes] == [6, 2, 2], "random weights score 0: only the kept row goes on"
    assert outcomes[1].pruned == {"none": 0.0, "yarn:factor=3": 0.0}
    report_study(study, tmp_path / "out")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["runs"] == ["short", "long", "timing"] and report["study"]["name"] == "tiny"
    rows = {c["row"] for c in report["cells"]}
    assert {"none", "linear:factor=3", "none (timing)", "linear:factor=3 (timing)"} <= rows, "timing kept apart"
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "Study tiny: stages" in markdown and "none (0.00), yarn:factor=3 (0.00)" in markdown
    assert "Ratio to the baseline row (none)" in markdown
    assert recorded_study(tmp_path / "out").name == "tiny", "the study folder knows its study"
    again = run_study(study, tmp_path / "out", show_progress=False)
    assert [o.summary.ran for o in again] == [0, 0, 0], "a study resumes what is stored"


def test_shards_fill_the_stages_together(tmp_path):
    study = load_study(write(tmp_path))
    for shard in ("0/2", "1/2"):
        run_study(study, tmp_path / "out", stages=["short"], executor=f"local:shard={shard}", show_progress=False)
    with ResultsStore(tmp_path / "out" / "short") as store:
        assert store.count() == 6


def test_a_prune_rule_on_an_unfinished_stage_waits_then_says_what_is_missing(tmp_path):
    study = load_study(write(tmp_path))
    run_study(study, tmp_path / "out", stages=["short"], executor="local:shard=0/2", show_progress=False)
    with pytest.raises(LongreachError, match=r"prunes on stage short, which lacks 3 cells .* run short to the end"):
        run_study(study, tmp_path / "out", stages=["long"], show_progress=False, wait=0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("methods: rope\n    prune", "methods: [yarnn]\n    prune"), "stage long: unknown method 'yarnn'"),
        (("lengths: [500]", "lengths: [5q]"), "bad length '5q'"),
        (("stage: short, below", "stage: later, below"), "prune names stage 'later', which is not an earlier stage"),
        (("    label: timing\n", "    lable: timing\n"), "stage timing: unknown key 'lable'; did you mean 'label'"),
        (("tasks: [passkey]\n    lengths: [500]", "tasks: [paskey]\n    lengths: [500]"), "unknown task 'paskey'"),
        (("name: tiny\n", "name: tiny\nbackend: hf\n"), "unknown key 'backend'"),
    ],
)
def test_mistakes_in_a_study_file_are_one_line(tmp_path, edit, message):
    with pytest.raises(LongreachError, match=message):
        load_study(write(tmp_path, STUDY.replace(*edit)))


def test_a_study_extends_another_with_its_own_keys_laid_over(tmp_path):
    write(tmp_path)
    (tmp_path / "variant.yaml").write_text("extends: study.yaml\nname: tiny_bf16\ndtype: bf16\nrows: {rope: [none]}\n")
    variant = load_study(tmp_path / "variant.yaml")
    base = load_study(tmp_path / "study.yaml")
    assert (variant.name, variant.dtype, base.dtype) == ("tiny_bf16", "bf16", "fp32")
    assert variant.stages[0].grid.methods == ("none",), "a list is replaced, not appended"
    assert [s.name for s in variant.stages] == ["short", "long", "timing"] and variant.baseline == "none"
    assert "extends" not in variant.source and variant.source["description"] == base.source["description"]


def test_a_nested_mapping_is_merged_key_by_key(tmp_path):
    train = "train:\n  settings: {data: 'tasks:passkey', length: 128, steps: 2}\n  models: {p: {recipe: plain}}\n"
    write(tmp_path, STUDY + train)
    (tmp_path / "fewer.yaml").write_text("extends: study.yaml\ntrain: {settings: {steps: 1}}\n")
    (trained,) = load_study(tmp_path / "fewer.yaml").trained
    assert (trained.name, trained.steps, trained.length) == ("p", 1, 128)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": "extends: missing.yaml\n"}, r"a.yaml: extends .*missing.yaml, which is not a file"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, r"a.yaml: extends itself through"),
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "- a list\n"}, r"a.yaml: extends .*b.yaml, which is not a study"),
    ],
)
def test_a_bad_extends_is_one_line(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(LongreachError, match=message):
        load_study(tmp_path / "a.yaml")


def test_the_shipped_studies_are_valid(monkeypatch):
    """Every shipped study parses, runs SmolLM2 and states its prompt format (raw, or chat for instruction-style
    families such as studies/families.yaml), so its committed report says what the model read. The local text files
    the studies name (Debian's python3-doc) need not be installed where the tests run: only their names are read."""
    monkeypatch.setattr(text_module, "read_text", lambda path: "text")
    for path in sorted((Path(__file__).parents[1] / "studies").glob("*.yaml")):
        study = load_study(path)
        assert study.model == "smollm2-135m" and study.prompt in ("raw", "chat"), path


def test_study_commands_call_the_library(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake_run(study, out, **kwargs):
        seen.update(study=study.name, out=out, **kwargs)
        return []

    def fake_report(study, out, report_out=None, baseline=None, heatmaps=True):
        (tmp_path / "report.md").write_text("study tables\n## Figures\n")
        return tmp_path / "report.html"

    monkeypatch.setattr(cli, "run_study", fake_run)
    monkeypatch.setattr(cli, "report_study", fake_report)
    path = write(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["study", "run", str(path), "--out", str(tmp_path / "o"), "--stages", "short", "--quiet"])
    assert exit_info.value.code == 0
    assert seen["study"] == "tiny" and seen["stages"] == ["short"] and seen["executor"] == "local"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["study", "report", str(tmp_path / "o"), "--study", str(path)])
    assert exit_info.value.code == 0 and "study tables" in capsys.readouterr().out
