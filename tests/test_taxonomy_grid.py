"""The diffusion x scope grid (Goldman et al. 2024): each task's mean over lengths, then the mean per quadrant."""

import json

import pytest

from helpers import record
from longreach.report import render_report
from longreach.report.aggregate import Group, quadrant, taxonomy_grid
from longreach.report.stats import Estimate
from longreach.results import Cell, ResultsStore


def point(task: str, row: str, length: int, score: float) -> tuple[tuple[str, str, int], Group]:
    return (task, row, length), Group(task, row, row, length, {"score": Estimate(score, score, score, 1)})


def test_tasks_land_in_their_family_quadrant_and_unknown_ones_are_left_out():
    assert quadrant("passkey") == ("low", "low")
    assert quadrant("cwe:n_top=5") == ("high", "high")
    assert quadrant("golden_thread_diary:num_entries=4") == ("low", "high")
    assert quadrant("bio_retrieve") == ("high", "low")
    assert quadrant("longgen_diary") is None, "a name this code no longer registers"
    assert quadrant("jsonl:path=absent.jsonl") is None, "the user's own instances state no place (the file is not read)"


def test_grid_weighs_every_task_equally_whatever_its_lengths():
    points = dict(
        [
            point("passkey", "none", 1024, 1.0),
            point("passkey", "none", 2048, 0.5),  # passkey: 0.75 over its two lengths
            point("cwe", "none", 1024, 0.2),
            point("cwe:n_top=5", "none", 1024, 0.4),
            point("cwe:n_top=5", "none", 2048, 0.4),  # two high/high tasks: (0.2 + 0.4) / 2
            point("longgen_diary", "none", 1024, 1.0),  # unknown: not on the grid
            point("passkey", "yarn", 1024, 0.0),
        ]
    )
    grid = taxonomy_grid(points)
    assert set(grid) == {"none", "yarn"}
    assert grid["none"][("low", "low")] == pytest.approx((0.75, 1))
    assert grid["none"][("high", "high")] == pytest.approx((0.3, 2))
    assert set(grid["none"]) == {("low", "low"), ("high", "high")}
    assert grid["yarn"] == {("low", "low"): (0.0, 1)}


def test_report_shows_the_grid_as_a_table_json_and_heatmap(tmp_path):
    with ResultsStore(tmp_path) as store:
        identifier = store.add_provenance({"model": "m", "source_hash": "abc", "git_sha": "s"})
        for task, score in (("passkey", 1.0), ("bestanswer", 0.0), ("longins_gist", 0.5)):
            for index in range(2):
                cell = Cell(task, "none", 1024, None, index)
                store.record(record(cell, "ok", score=score, prediction="x", answers=["1"]), identifier)
    render_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Mean score on the diffusion x scope grid (Goldman et al. 2024)" in md
    assert "| none | 1.00 (1 tasks) | - | - | 0.25 (2 tasks) |" in md
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["taxonomy_grid"] == {
        "none": {"low/low": {"score": 1.0, "tasks": 1}, "high/high": {"score": 0.25, "tasks": 2}}
    }
    assert (tmp_path / "taxonomy.png").read_bytes()[:4] == b"\x89PNG"
    assert "taxonomy.png" in report["figures"]["heatmaps"]
