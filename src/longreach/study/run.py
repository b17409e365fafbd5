"""Run a study: each stage is a resumable run into ``OUT/<stage>/``; a prune rule drops the rows that scored below its
bar in an earlier stage (recorded with their scores); ``study report`` merges every stage into one report.

Sharding: ``executor=local:shard=i/n`` runs the i-th slice of every stage, so n processes (on n devices or sharing
one) fill the same stores together. A stage that prunes on an earlier one waits until every cell of that stage is
stored (by any process), since a rule judged on part of a stage would prune differently in each process.

Trained models (the study's ``train`` section): before a stage that names one in ``models`` runs, the model is
trained (or resumed, or found finished) into ``OUT/train/NAME`` (:mod:`longreach.study.training`); the stage then runs
once per model, into ``OUT/STAGE`` for the base model and ``OUT/STAGE@NAME`` for each trained one.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.report.render import Table, render_report
from longreach.results import STORE_NAME, ResultsStore
from longreach.runner import RunConfig, RunSummary, run_sweep
from longreach.runner.plan import Plan
from longreach.study.spec import BASE, Stage, Study
from longreach.study.training import ensure_trained, stage_folder, stage_label, training_records, training_table

POLL_SECONDS = 20.0


@dataclass(frozen=True)
class StageOutcome:
    name: str  # the stage's folder name (STAGE, or STAGE@MODEL for a trained model)
    summary: RunSummary
    seconds: float
    pruned: dict[str, float]


def stage_config(
    study: Study,
    stage: Stage,
    out: Path,
    executor: str,
    device: str,
    methods: tuple[str, ...],
    resume_anyway: bool = False,
    model: str = BASE,
    model_dir: Path | None = None,
) -> RunConfig:
    """The run configuration of one stage (its rows after pruning) on one of its models (``model_dir``: where a
    trained model's folder is)."""
    return RunConfig(
        grid=replace(stage.grid, methods=methods),
        out=stage_folder(out, stage, model),
        model=study.model if model == BASE else str(model_dir),
        dtype=study.dtype,
        device=device,
        seed=study.seed,
        backend=stage.backend,
        executor=executor,
        prompt=stage.prompt or study.prompt,
        reuse_prefix=stage.reuse_prefix,
        interleave=stage.interleave,
        resume=True,
        resume_anyway=resume_anyway,
        threshold=study.threshold,
    )


def _mean_scores(folder: Path) -> tuple[dict[str, float], dict[str, int]]:
    """Mean score per method over a stage's ``ok`` cells, and the number of stored cells (ok or error) per method."""
    scores: dict[str, list[float]] = defaultdict(list)
    stored: dict[str, int] = defaultdict(int)
    if (folder / STORE_NAME).is_file():
        with ResultsStore(folder) as store:
            for row in store.rows():
                stored[row["method"]] += 1
                if row["status"] == "ok":
                    scores[row["method"]].append(row["score"])
    return {m: statistics.fmean(v) for m, v in scores.items()}, dict(stored)


def rows_after_pruning(study: Study, stage: Stage, out: Path, wait: float) -> tuple[tuple[str, ...], dict[str, float]]:
    """The stage's method specs once its prune rule is applied, and the pruned rows with their scores."""
    methods = tuple(parse_stack(m).repr for m in stage.grid.methods)
    if stage.prune is None:
        return methods, {}
    source = study.stage(stage.prune.stage)
    source_methods, _ = rows_after_pruning(study, source, out, wait)
    config = stage_config(study, source, out, "local", "cpu", source_methods)  # only to count its cells
    per_method = len(Plan.from_config(config).cells("raw")) // max(1, len(source_methods))
    deadline = time.monotonic() + wait
    while True:
        scores, stored = _mean_scores(out / source.name)
        missing = {m: per_method - stored.get(m, 0) for m in source_methods if stored.get(m, 0) < per_method}
        if not missing:
            break
        if time.monotonic() > deadline:
            raise LongreachError(
                f"stage {stage.name} prunes on stage {source.name}, which lacks {sum(missing.values())} cells "
                f"(of {', '.join(missing)}); run {source.name} to the end first (other shards may still be running)"
            )
        time.sleep(POLL_SECONDS)
    keep = set(stage.prune.keep)
    pruned = {m: scores.get(m, 0.0) for m in methods if m not in keep and scores.get(m, 0.0) < stage.prune.below}
    return tuple(m for m in methods if m not in pruned), pruned


def run_study(
    study: Study,
    out: Path,
    *,
    stages: list[str] | None = None,
    executor: str = "local",
    device: str = "cpu",
    show_progress: bool = True,
    wait: float = 3600.0,
    resume_anyway: bool = False,
    models: list[str] | None = None,
) -> list[StageOutcome]:
    """Run the named stages (default: all, in file order) into ``out``; each stage resumes what is stored (refusing
    other code or settings, unless ``resume_anyway``). ``models`` (default: all) keeps only those models' runs of
    each stage, so a long training study can go model by model (train one, evaluate it everywhere, then the next)."""
    chosen = [study.stage(name) for name in stages] if stages else list(study.stages)
    wanted = study.check_models(models) if models else None
    outcomes = []
    for stage in chosen:
        chosen_models = [m for m in stage.models if wanted is None or m in wanted]
        if not chosen_models:
            continue
        methods, pruned = rows_after_pruning(study, stage, out, wait)
        for model in chosen_models:
            model_dir = None if model == BASE else ensure_trained(study, model, out, device, show_progress)
            config = stage_config(study, stage, out, executor, device, methods, resume_anyway, model, model_dir)
            with ResultsStore(config.out) as store:  # before any cell: a stage killed midway keeps its model's label
                store.set_meta(
                    study=study.source, stage=stage.name, model=model, label=stage_label(stage, model), pruned=pruned
                )
            start = time.perf_counter()
            summary = run_sweep(config, show_progress=show_progress)
            seconds = time.perf_counter() - start
            with ResultsStore(config.out) as store:
                walls = store.meta().get("wall_seconds", [])
                walls.append({"executor": executor, "seconds": round(seconds, 1), "ran": summary.ran})
                store.set_meta(wall_seconds=walls)
            outcomes.append(StageOutcome(config.out.name, summary, seconds, pruned))
    return outcomes


def _folders(study: Study, out: Path) -> list[tuple[Stage, Path]]:
    """Every stage with its folder for each of its models, in file order."""
    return [(stage, stage_folder(out, stage, model)) for stage in study.stages for model in stage.models]


def _stage_table(study: Study, out: Path) -> Table:
    rows = []
    for stage, folder in _folders(study, out):
        if not (folder / STORE_NAME).is_file():
            rows.append([folder.name, "not run", "-", "-", "-", "-"])
            continue
        with ResultsStore(folder) as store:
            meta, stored = store.meta(), store.rows()
        failed = sum(r["status"] == "error" for r in stored)
        walls = meta.get("wall_seconds", [])
        wall = ", ".join(f"{w['seconds']:.0f}" for w in walls if w.get("ran")) or "-"
        pruned = ", ".join(f"{m} ({s:.2f})" for m, s in (meta.get("pruned") or {}).items()) or "-"
        rule = f"< {stage.prune.below:g} in {stage.prune.stage}" if stage.prune else "-"
        rows.append([folder.name, str(len(stored)), str(failed), wall, rule, pruned])
    return Table(
        f"Study {study.name}: stages",
        ["stage", "cells stored", "failed", "wall seconds per process run", "prune rule", "pruned rows (score)"],
        rows,
        study.description,
    )


def report_study(
    study: Study, out: Path, report_out: Path | None = None, baseline: str | None = None, heatmaps: bool = True
) -> Path:
    """Merge every stage that has run into one report (``report_out``, default ``out``); returns report.html."""
    folders = [folder for _, folder in _folders(study, out) if (folder / STORE_NAME).is_file()]
    if not folders:
        raise LongreachError(f"{out} holds no stage of study {study.name}; run `longreach study run` first")
    extra: dict[str, Any] = {"study": study.source}
    trained = training_table(study, out)
    if trained is not None:
        extra["training"] = training_records(study, out)
    return render_report(
        folders,
        out=report_out or out,
        threshold=study.threshold,
        baseline=baseline or study.baseline,
        preface=[_stage_table(study, out)] + ([trained] if trained is not None else []),
        extra=extra,
        heatmaps=heatmaps,
    )
