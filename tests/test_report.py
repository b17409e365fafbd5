import json
import re

import pytest

from longreach.errors import LongreachError
from longreach.report import render_report
from longreach.report.aggregate import Point, effective_length
from longreach.runner.store import Cell, CellResult, ResultsStore


def point(score: float) -> Point:
    return Point(score=score, n=1, seconds=1, prefill_seconds=1, peak_rss_mb=1, kv_cache_bytes=1)


def test_effective_length_is_ruler_style_contiguous_from_the_shortest():
    points = {
        ("t", "none", 1024): point(1.0),
        ("t", "none", 2048): point(0.9),
        ("t", "none", 4096): point(0.5),
        ("t", "none", 8192): point(0.95),  # a later recovery does not count
        ("t", "yarn", 1024): point(0.5),
        ("t", "yarn", 2048): point(1.0),
    }
    assert effective_length(points, 0.85) == {"none": {"t": 2048}, "yarn": {"t": None}}
    assert effective_length(points, 0.4)["none"]["t"] == 8192


@pytest.fixture
def folder(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.set_meta(
            provenance={"model": "m", "native_context_length": 2048, "dtype": "bf16", "seed": 0}, threshold=0.85
        )
        for method, scores in {"none": (1.0, 1.0, 0.0), "other": (1.0, 0.5, 0.5)}.items():
            for length, score in zip((1024, 2048, 4096), scores, strict=True):
                for depth in (0.0, 1.0):
                    store.record(
                        CellResult(
                            Cell("passkey", method, length, depth, 0),
                            "ok",
                            score=score,
                            seconds=2.0,
                            prefill_seconds=1.5,
                            peak_rss_mb=800.0,
                            kv_cache_bytes=length * 1000,
                            realized_tokens=length,
                            prediction="x",
                            answers=["1"],
                        )
                    )
        store.record(CellResult(Cell("passkey", "none", 8192, 0.0, 0), "error", error="RuntimeError: oom"))
    return tmp_path


def test_report_files_and_json_schema(folder):
    html_path = render_report(folder)
    report = json.loads((folder / "report.json").read_text())
    assert set(report) >= {"provenance", "cells", "effective_length", "summary", "failed_cells", "threshold"}
    assert report["effective_length"] == {"none": {"passkey": 2048}, "other": {"passkey": 1024}}
    assert len(report["cells"]) == 12 and len(report["failed_cells"]) == 1
    assert {c["beyond_native_window"] for c in report["cells"] if c["context_length"] == 4096} == {True}
    for name in ("curve_passkey.png", "heatmap_passkey__none.png", "heatmap_passkey__other.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    md = (folder / "report.md").read_text()
    assert "| passkey | none | 1.00 | 1.00 | 0.00 |" in md
    assert "4K*" in md and "Failed cells (1" in md
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"src=['\"](?!data:)", page), "the page embeds every image"


def test_threshold_can_be_changed_when_re_rendering(folder):
    render_report(folder, threshold=0.5)
    report = json.loads((folder / "report.json").read_text())
    assert report["effective_length"]["other"]["passkey"] == 4096
    assert report["threshold"] == 0.5


def test_report_of_a_folder_without_results_fails_clearly(tmp_path):
    with pytest.raises(LongreachError, match="holds no results.sqlite"):
        render_report(tmp_path)
