"""Run a grid: validate everything cheap first, then let the executor run each unfinished cell, store it, report.

Order of checks, so mistakes cost seconds: specs (no I/O) -> resume safety -> the tokenizer and prompt format ->
one sample per (task, length) fits -> weights (in the workers) -> lengths the model can hold. Cells already stored as
``ok`` are skipped on ``resume``; a failing cell is stored as ``error`` and the run goes on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from longreach.errors import LongreachError
from longreach.prompts import PromptFormat, resolve_format
from longreach.results import STORE_NAME, Cell, Record, ResultsStore
from longreach.results.provenance import code_version, fingerprint
from longreach.runner.executors import parse_executor
from longreach.runner.plan import Plan, RunConfig
from longreach.runner.worker import Job, Started


@dataclass(frozen=True)
class RunSummary:
    out: Path
    planned: int
    skipped: int
    ran: int
    failed: int


def run_sweep(config: RunConfig, *, show_progress: bool = True, render: bool = True) -> RunSummary:
    """Run every unfinished cell of ``config`` into ``config.out/results.sqlite`` and render the report."""
    from longreach.report import render_report

    plan = Plan.from_config(config)
    executor = parse_executor(config.executor)
    finished = check_resume(config)
    tokenizer = config.backend_spec().load_tokenizer(config.model_settings())
    frame = resolve_format(tokenizer, config.prompt)
    cells = executor.select(plan.cells(frame.name))
    todo = [cell for cell in cells if cell.key not in finished]
    check_lengths_fit(plan, tokenizer, frame)
    failed = 0
    with ResultsStore(config.out) as store:
        store.set_meta(settings=config.settings(), code=code_version(), threshold=config.threshold, grid=_grid(config))
        if todo:
            console = Console(stderr=True, quiet=not show_progress)
            calibrated = {spec: c["resolved"] for spec, c in store.meta().get("calibration", {}).items()}
            longest: dict[str, int] = {}
            for cell in todo:
                longest[cell.method] = max(longest.get(cell.method, 0), cell.context_length)
            job = Job(config, longest, calibrated)
            with console.status(f"loading {config.model} ({config.backend}, {config.dtype})"):
                results = executor.results(job, todo)
                first = next(results, None)
            if first is not None:
                failed = _record(_chain(first, results), todo, store, console)
    if render:
        render_report(config.out, threshold=config.threshold)
    return RunSummary(config.out, len(cells), len(cells) - len(todo), len(todo), failed)


def _grid(config: RunConfig) -> dict[str, Any]:
    return {**asdict(config.grid), "backend": config.backend, "executor": config.executor}


def _chain(first: tuple[Record, Started], rest: Iterator[tuple[Record, Started]]) -> Iterator[tuple[Record, Started]]:
    yield first
    yield from rest


def check_resume(config: RunConfig) -> set[str]:
    """Keys of the cells already finished in ``config.out`` (empty for a new folder). Refuses to mix results of other
    code or settings into a stored run unless ``resume_anyway`` (then every cell keeps its own provenance)."""
    if not (config.out / STORE_NAME).is_file():
        return set()
    with ResultsStore(config.out) as store:
        if not store.count():
            return set()
        if not config.resume:
            raise LongreachError(
                f"{config.out} already holds results; pass --resume to continue it or pick a new --out"
            )
        meta = store.meta()
        changed = _changes(meta, config)
        if changed and not config.resume_anyway:
            raise LongreachError(
                f"cannot resume {config.out}: {'; '.join(changed)}. Use the same code and settings, a new --out, or "
                "--resume-anyway to mix them (each cell keeps its own provenance and the report shows the mix)"
            )
        return store.finished_keys()


def _changes(meta: dict[str, Any], config: RunConfig) -> list[str]:
    """What differs between the stored run and this one: settings, then the code."""
    changes = []
    stored = meta.get("settings") or _settings_of_old_store(meta)
    for key, value in config.settings().items():
        if key in stored and stored[key] != value:
            changes.append(f"{key} was {stored[key]!r}, now {value!r}")
    code, now = meta.get("code") or {}, code_version()
    if code.get("source_hash") != now["source_hash"]:
        was = f"{code.get('git_sha') or '?'} (source {code.get('source_hash') or 'unrecorded'})"
        changes.append(f"the code changed: {was} -> {now['git_sha'] or '?'} (source {now['source_hash']})")
    return changes


def _settings_of_old_store(meta: dict[str, Any]) -> dict[str, Any]:
    """The settings a store written before settings were recorded knows (its flat config)."""
    old = meta.get("config") or {}
    return {key: old[key] for key in ("model", "dtype", "seed") if key in old}


def check_lengths_fit(plan: Plan, tokenizer: Any, frame: PromptFormat) -> None:
    """Generate one sample per (task, length) so an impossible length fails before any weights load."""
    grid = plan.config.grid
    for parsed in plan.tasks:
        for length in grid.lengths:
            try:
                parsed.task.generate(tokenizer, length, grid.depths[0], plan.config.seed, 0, frame=frame)
            except LongreachError as exc:
                raise LongreachError(f"{parsed.spec} at {length} tokens: {exc}") from None


def _cost(cell: Cell) -> float:
    """Relative cost of a cell for the ETA: linear layers plus (causal) attention's quadratic part."""
    return cell.context_length * (1.0 + cell.context_length / 16384)


def _record(results: Iterator[tuple[Record, Started]], todo: list[Cell], store: ResultsStore, console: Console) -> int:
    """Store each record as it arrives (the driver is the only writer); returns the number of failed cells."""
    failed = 0
    provenance_ids: dict[str, int] = {}
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[cells]} cells"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("run", total=sum(map(_cost, todo)) or 1, done=0, cells=len(todo))
        for done, (record, started) in enumerate(results, start=1):
            mark = fingerprint(started.provenance)
            if mark not in provenance_ids:
                provenance_ids[mark] = store.add_provenance(started.provenance)
                if started.calibration:
                    store.set_meta(calibration={**store.meta().get("calibration", {}), **started.calibration})
            store.record(record, provenance_ids[mark])
            cell = record.cell
            if record.status == "error":
                failed += 1
                progress.console.print(f"[red]cell failed[/red] {cell.key}: {record.error}")
            depth = "-" if cell.depth is None else f"{cell.depth:g}"
            mode = "" if cell.mode == "aware" else f" ({cell.mode})"
            progress.update(
                bar,
                advance=_cost(cell),
                done=done,
                description=f"{cell.task} {cell.context_length} d={depth} #{cell.index} [{cell.method}]{mode}",
            )
    return failed
