"""A study restored from its committed report.json: the stores come back cell for cell (provenance, details, series,
run-level facts), the restored folder resumes to nothing and reports the same tables, an older report without the
stores' facts restores what its cells tell, training records come back so a missing model is trained again, and
mistakes are one line."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

import longreach.cli as cli
from longreach.errors import LongreachError
from longreach.results import ResultsStore
from longreach.study import load_study, report_study, restore_study, run_study
from longreach.study.training import _finished, trained_dir

TEXT = " ".join(f"Line {i} of a small book, about rivers and the towns along them." for i in range(200))
STUDY = """
name: tiny_restore
description: a study to restore
model: tiny-llama
dtype: fp32
prompt: raw
stages:
  - name: short
    tasks: [passkey]
    lengths: [300]
    depths: [0.2, 0.8]
    methods: [none, "linear:factor=3"]
  - name: timing
    label: timing
    tasks: [passkey]
    lengths: [300]
    depths: [0.5]
    methods: [none]
  - name: text
    tasks: ["text:path=BOOK:bucket=64"]
    lengths: [256]
    methods: [none]
"""


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    book = tmp_path / "book.txt"
    book.write_text(TEXT)
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(STUDY).replace("BOOK", str(book)))
    return path


@pytest.fixture
def reported(study_file: Path, tmp_path: Path) -> Path:
    """A finished study folder with its report (as a committed report would be)."""
    study = load_study(study_file)
    run_study(study, tmp_path / "out", show_progress=False)
    report_study(study, tmp_path / "out", report_out=tmp_path / "committed", heatmaps=False)
    return tmp_path / "committed"


def _stored(folder: Path) -> tuple[list[dict], dict, dict]:
    with ResultsStore(folder) as store:
        rows = [{k: v for k, v in r.items() if k not in ("finished_at", "provenance_id")} for r in store.rows()]
        provenances = {r["key"]: store.provenances()[r["provenance_id"]] for r in store.rows()}
        return rows, provenances, store.meta()


def test_a_restored_study_holds_every_cell_and_fact_resumes_to_nothing_and_reports_the_same(
    study_file, reported, tmp_path
):
    study = load_study(study_file)
    written = restore_study(reported / "report.json", tmp_path / "again")
    assert [p.parent.name for p in written] == ["short", "timing", "text"]
    for stage in ("short", "timing", "text"):
        rows, provenances, meta = _stored(tmp_path / "out" / stage)
        back_rows, back_provenances, back_meta = _stored(tmp_path / "again" / stage)
        assert back_rows == rows and back_provenances == provenances, f"stage {stage} restored cell for cell"
        assert back_meta["restored_from"]["report"] == str(reported / "report.json")
        assert {k: v for k, v in back_meta.items() if k != "restored_from"} == meta
    rows, _, _ = _stored(tmp_path / "again" / "text")
    assert rows[0]["series"]["loss_by_position"] and rows[0]["meta"], "series and details come back"
    again = run_study(study, tmp_path / "again", show_progress=False)
    assert [o.summary.ran for o in again] == [0, 0, 0], "the restored study resumes what the report held"
    report_study(study, tmp_path / "again", report_out=tmp_path / "regenerated", heatmaps=False)
    before = json.loads((reported / "report.json").read_text())
    after = json.loads((tmp_path / "regenerated" / "report.json").read_text())
    assert after["cells"] == before["cells"] and after["summary"] == before["summary"]
    assert after["provenance"] == before["provenance"]
    markdown = (tmp_path / "regenerated" / "report.md").read_text()
    assert markdown.split("## Figures")[0] == (reported / "report.md").read_text().split("## Figures")[0]


def test_a_report_without_the_stores_facts_restores_what_its_cells_tell(study_file, reported, tmp_path):
    """Reports written before report.json kept each store's meta: label, settings and code come from the cells."""
    document = json.loads((reported / "report.json").read_text())
    del document["stores"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(document))
    restore_study(old, tmp_path / "again")
    _, _, meta = _stored(tmp_path / "again" / "timing")
    _, _, original = _stored(tmp_path / "out" / "timing")
    assert meta["label"] == "timing" and meta["settings"] == original["settings"]
    assert meta["code"] == original["code"] and "wall_seconds" not in meta
    again = run_study(load_study(study_file), tmp_path / "again", show_progress=False)
    assert [o.summary.ran for o in again] == [0, 0, 0], "same code and settings: it resumes without --resume-anyway"


def test_training_records_come_back_and_a_missing_model_is_trained_again(study_file, reported, tmp_path):
    document = json.loads((reported / "report.json").read_text())
    record = {"settings": {"out": "elsewhere/train/abf", "steps": 2}, "steps": 2, "losses": [1.0], "tokens": 256}
    document["training"] = {"abf": record}
    path = tmp_path / "trained.json"
    path.write_text(json.dumps(document))
    restore_study(path, tmp_path / "again")
    back = json.loads((trained_dir(tmp_path / "again", "abf") / "train.json").read_text())
    assert back["settings"]["out"] == str(trained_dir(tmp_path / "again", "abf")) and back["losses"] == [1.0]
    assert back["restored_from"] == str(path)
    config = type("Config", (), {"out": trained_dir(tmp_path / "again", "abf")})()
    assert not _finished(config), "a record without its model folder is trained again, not loaded"


def test_restore_refuses_a_folder_with_results_and_a_file_that_is_no_report(reported, tmp_path):
    with pytest.raises(LongreachError, match="already holds results; restore into a new folder"):
        restore_study(reported, tmp_path / "out")
    bad = tmp_path / "bad.json"
    bad.write_text('{"cells": []}')
    with pytest.raises(LongreachError, match=r"not a longreach report.json \(it lacks runs, provenance"):
        restore_study(bad, tmp_path / "x")
    bad.write_text("[1, 2]")
    with pytest.raises(LongreachError, match="it holds no JSON object"):
        restore_study(bad, tmp_path / "x")
    plain = json.loads((reported / "report.json").read_text())
    del plain["study"]
    bad.write_text(json.dumps(plain))
    with pytest.raises(LongreachError, match="the report of a run, not of a study"):
        restore_study(bad, tmp_path / "x")


def test_study_restore_command_says_what_it_wrote_and_fails_in_one_line(reported, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["study", "restore", str(reported), "--out", str(tmp_path / "again")])
    assert exit_info.value.code == 0 and "restored 3 stores and 0 training records" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["study", "restore", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "cannot read" in err and "Traceback" not in err and len(err.splitlines()) == 1
