import json
import re
import sqlite3

import pytest

from helpers import record
from longreach.errors import LongreachError
from longreach.report import render_report
from longreach.report.aggregate import Group, effective_length
from longreach.report.stats import Estimate, bootstrap, estimate, wilson
from longreach.results import METRICS, Cell, ResultsStore

PROVENANCE = {"model": "m", "native_context_length": 2048, "dtype": "bf16", "source_hash": "abc", "git_sha": "s"}


def group(score: float) -> Group:
    return Group("t", "m", "m", 0, {"score": Estimate(score, score, score, 1)})


def test_effective_length_is_ruler_style_contiguous_from_the_shortest():
    points = {
        ("t", "none", 1024): group(1.0),
        ("t", "none", 2048): group(0.9),
        ("t", "none", 4096): group(0.5),
        ("t", "none", 8192): group(0.95),  # a later recovery does not count
        ("t", "yarn", 1024): group(0.5),
        ("t", "yarn", 2048): group(1.0),
    }
    assert effective_length(points, 0.85) == {"none": {"t": 2048}, "yarn": {"t": None}}
    assert effective_length(points, 0.4)["none"]["t"] == 8192


def test_wilson_interval_matches_the_closed_form():
    # Wilson (1927) for 5 of 10 at 95%: 0.2366 .. 0.7634; for 0 of 10: 0 .. 0.2775; for 10 of 10: 0.7225 .. 1
    assert wilson(0.5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0.0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(1.0, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_bootstrap_interval_of_the_median_is_deterministic_and_brackets_it():
    values = [1.0, 1.1, 0.9, 1.3, 5.0, 1.05, 0.95]
    low, high = bootstrap(values)
    assert low <= 1.05 <= high and (low, high) == bootstrap(values)
    assert estimate([2.0], "median", "bootstrap") == Estimate(2.0, 2.0, 2.0, 1)


def test_perplexity_aggregates_to_exp_of_the_mean_loss_with_an_interval_around_it():
    import math

    nll = [2.0, 2.5, 3.0, 2.2]
    ppl = estimate([math.exp(x) for x in nll], "geomean", "bootstrap")
    assert ppl.value == pytest.approx(math.exp(sum(nll) / 4))  # geometric mean of exp(x) = exp(mean x)
    assert ppl.low <= ppl.value <= ppl.high and ppl.low >= math.exp(2.0) and ppl.high <= math.exp(3.0)


def test_every_declared_metric_has_an_aggregation_a_direction_and_an_interval():
    for metric in METRICS:
        assert metric.aggregation in ("mean", "median", "max", "geomean")
        assert metric.better in ("higher", "lower", "none")
        assert metric.interval in ("wilson", "bootstrap", "none")
    assert {m.name for m in METRICS} >= {"score", "prefill_seconds", "decode_tok_s", "peak_gpu_mb", "kv_cache_bytes"}


def fill(folder, methods: dict[str, tuple[float, ...]], seconds: float = 2.0) -> None:
    with ResultsStore(folder) as store:
        store.set_meta(threshold=0.85)
        identifier = store.add_provenance(PROVENANCE)
        for method, scores in methods.items():
            for length, score in zip((1024, 2048, 4096), scores, strict=True):
                for depth in (0.0, 1.0):
                    cell = Cell("passkey", method, length, depth, 0)
                    metrics = dict(score=score, seconds=seconds, prefill_seconds=1.5, peak_rss_mb=800.0)
                    metrics.update(kv_cache_bytes=length * 1000, realized_tokens=length, decode_tok_s=20.0)
                    store.record(record(cell, "ok", **metrics, prediction="x", answers=["1"]), identifier)
        store.record(record(Cell("passkey", "none", 8192, 0.0, 0), "error", error="RuntimeError: oom"), identifier)


@pytest.fixture
def folder(tmp_path):
    fill(tmp_path, {"none": (1.0, 1.0, 0.0), "other": (1.0, 0.5, 0.5)})
    return tmp_path


def test_report_files_and_json_schema(folder):
    html_path = render_report(folder)
    report = json.loads((folder / "report.json").read_text())
    assert set(report) >= {"schema", "provenance", "cells", "effective_length", "summary", "failed_cells", "threshold"}
    assert [m["name"] for m in report["schema"]["metrics"]] == [m.name for m in METRICS]
    assert report["effective_length"] == {"none": {"passkey": 2048}, "other": {"passkey": 1024}}
    assert len(report["cells"]) == 12 and len(report["failed_cells"]) == 1
    assert {c["beyond_native_window"] for c in report["cells"] if c["context_length"] == 4096} == {True}
    other_2k = next(s for s in report["summary"] if s["row"] == "other" and s["context_length"] == 2048)
    score = other_2k["metrics"]["score"]
    assert score["value"] == 0.5 and score["n"] == 2 and score["low"] < 0.5 < score["high"], "a Wilson interval"
    for name in ("curve_passkey.png", "heatmap_passkey__none.png", "heatmap_passkey__other.png", "taxonomy.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    md = (folder / "report.md").read_text()
    assert "| passkey | none | 1.00 [0.34, 1.00] | 1.00 [0.34, 1.00] | 0.00 [0.00, 0.66] | 2 |" in md
    assert "4K*" in md and "Failed cells (1" in md and "decode_tok_s" in md
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 4
    assert not re.search(r"src=['\"](?!data:)", page), "the page embeds every image"


def test_threshold_can_be_changed_when_re_rendering(folder):
    render_report(folder, threshold=0.5)
    report = json.loads((folder / "report.json").read_text())
    assert report["effective_length"]["other"]["passkey"] == 4096
    assert report["threshold"] == 0.5


def test_runs_merge_and_rows_compare_with_the_baseline(tmp_path):
    fill(tmp_path / "a", {"none": (1.0, 1.0, 0.0)}, seconds=2.0)
    fill(tmp_path / "b", {"yarn:factor=4": (1.0, 1.0, 1.0)}, seconds=3.0)
    render_report([tmp_path / "a", tmp_path / "b"], out=tmp_path / "merged", baseline="none")
    report = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert report["runs"] == ["a", "b"] and set(report["provenance"]) == {"a:1", "b:1"}
    yarn_4k = next(s for s in report["summary"] if s["row"] == "yarn:factor=4" and s["context_length"] == 4096)
    assert yarn_4k["ratio_to_baseline"]["seconds"] == pytest.approx(1.5)
    assert "score" not in yarn_4k["ratio_to_baseline"], "no ratio over a zero baseline score"
    md = (tmp_path / "merged" / "report.md").read_text()
    assert "Ratio to the baseline row (none)" in md and "| passkey | yarn:factor=4 | 2K | 1.000 | 1.500 |" in md


def test_a_baseline_alone_gets_no_empty_ratio_table(tmp_path):
    fill(tmp_path / "a", {"none": (1.0, 1.0, 0.0)}, seconds=2.0)
    render_report(tmp_path / "a", baseline="none")
    assert "Ratio to the baseline row" not in (tmp_path / "a" / "report.md").read_text()


def test_a_trained_models_rows_are_divided_by_the_untrained_models(tmp_path):
    """A study's STAGE@NAME store (restored from an older report, its meta naming no model) labels its rows with the
    model; they are divided by the untrained model's baseline row, a timing label kept on both sides."""
    fill(tmp_path / "inside", {"none": (1.0, 1.0, 0.5)}, seconds=2.0)
    fill(tmp_path / "inside@yarn", {"none": (1.0, 0.5, 1.0)}, seconds=4.0)
    fill(tmp_path / "timing", {"none": (1.0, 1.0, 1.0)}, seconds=1.0)
    fill(tmp_path / "timing@yarn", {"none": (1.0, 1.0, 1.0)}, seconds=3.0)
    for name, label in (("inside@yarn", "yarn"), ("timing", "timing"), ("timing@yarn", "timing, yarn")):
        with ResultsStore(tmp_path / name) as store:
            store.set_meta(label=label)
    runs = [tmp_path / n for n in ("inside", "inside@yarn", "timing", "timing@yarn")]
    render_report(runs, out=tmp_path / "merged", baseline="none")
    summary = json.loads((tmp_path / "merged" / "report.json").read_text())["summary"]
    ratio = {(s["row"], s["context_length"]): s["ratio_to_baseline"] for s in summary}
    assert ratio[("none (yarn)", 2048)]["score"] == 0.5 and ratio[("none (yarn)", 4096)]["score"] == 2.0
    assert ratio[("none (yarn)", 1024)]["seconds"] == pytest.approx(2.0)
    assert ratio[("none (timing, yarn)", 1024)]["seconds"] == pytest.approx(3.0), "over none (timing), not none"
    table = (tmp_path / "merged" / "report.md").read_text().split("Ratio to the baseline row")[1].split("##")[0]
    assert "| passkey | none (yarn) | 4K* | 2.000 |" in table and "| none (timing) |" not in table, "no self-ratio"


def test_report_of_a_folder_without_results_fails_clearly(tmp_path):
    with pytest.raises(LongreachError, match="holds no results.sqlite"):
        render_report(tmp_path)


def test_a_store_written_before_the_declared_schema_is_upgraded(tmp_path):
    """Metrics kept in the old meta blob become columns; the run-level provenance is attached to every cell."""
    db = sqlite3.connect(tmp_path / "results.sqlite")
    db.executescript(
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE cells (key TEXT PRIMARY KEY, task TEXT NOT NULL, method TEXT NOT NULL,
        context_length INTEGER NOT NULL, depth REAL, idx INTEGER NOT NULL, mode TEXT NOT NULL DEFAULT 'aware',
        status TEXT NOT NULL, score REAL, seconds REAL, prefill_seconds REAL, peak_rss_mb REAL,
        kv_cache_bytes INTEGER, realized_tokens INTEGER, realized_depth REAL, new_tokens INTEGER, prediction TEXT,
        answers TEXT, error TEXT, meta TEXT, finished_at TEXT NOT NULL DEFAULT 'x');
        INSERT INTO meta VALUES ('provenance', '{"model": "m", "git_sha": "old"}');
        INSERT INTO cells (key, task, method, context_length, depth, idx, status, score, answers, meta)
        VALUES ('passkey|none|512|0.5|0', 'passkey', 'none', 512, 0.5, 0, 'ok', 1.0, '[]',
        '{"decode_seconds": 2.0, "decode_steps": 10, "compressed_kv_bytes": 77, "random_baseline": 0.1}');"""
    )
    db.close()
    with ResultsStore(tmp_path) as store:
        (row,) = store.rows()
        assert (row["decode_seconds"], row["decode_steps"], row["decode_tok_s"]) == (2.0, 10, 5.0)
        assert row["compressed_kv_bytes"] == 77 and row["random_baseline"] == 0.1
        assert store.provenances()[row["provenance_id"]]["git_sha"] == "old"
        assert store.finished_keys() == {"passkey|none|512|0.5|0"}, "old keys stay valid"


def test_curve_lines_never_share_a_style_and_the_legend_stands_beside_the_plot(tmp_path, monkeypatch):
    """Eleven readers in one curve plot shared a color (matplotlib's cycle has ten) and the legend covered lines."""
    import matplotlib.pyplot as plt

    from longreach.report import plots

    for count in (3, 11, 25):
        styles = plots.line_styles(count)
        assert len(set(styles)) == count
    drawn, close = {}, plt.close
    monkeypatch.setattr(plt, "close", lambda fig: drawn.setdefault("fig", fig))
    lines = {f"method{i}": [(16384, 0.1 * (i % 10)), (32768, 0.5)] for i in range(11)}
    plots.curves(lines, "passkey", 8192, 0.85, tmp_path / "curve.png")
    ax = drawn["fig"].axes[0]
    styles = {(line.get_color(), line.get_marker()) for line in ax.get_lines() if line.get_label() in lines}
    assert len(styles) == 11
    legend = ax.get_legend().get_window_extent(drawn["fig"].canvas.get_renderer())
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes, so it covers no line
    assert (tmp_path / "curve.png").stat().st_size > 0
    close(drawn["fig"])
