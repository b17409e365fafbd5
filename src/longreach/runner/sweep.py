"""Run a sweep: validate everything cheap first, load the model once, run each unfinished cell, store it.

Order of checks, so mistakes cost seconds: specs (no I/O) -> model files and tokenizer -> one sample per
(task, length) fits -> weights -> lengths the model can hold. Cells already stored as ``ok`` are skipped
on ``resume``; a failing cell is stored as ``error`` and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from longreach.backends import Backend, HFBackend, Request
from longreach.backends.openai import BackendUnavailable, OpenAIBackend
from longreach.errors import LongreachError
from longreach.methods import MethodStack, auto, parse_stack
from longreach.models import ZOO, LoadedModel, load_model, load_tokenizer, resolve
from longreach.runner.executors import local_results, ray_results
from longreach.runner.plan import Plan, SweepConfig
from longreach.runner.provenance import provenance
from longreach.runner.store import STORE_NAME, Cell, CellResult, ResultsStore
from longreach.tasks import Task

# How many backends (models) this process has built: a Ray worker reports it with every cell.
BACKENDS_BUILT = 0

# Settings that must match for a resumed run to mix with the stored cells.
_IDENTITY = ("model", "dtype", "seed", "backend")


@dataclass(frozen=True)
class SweepSummary:
    out: Path
    planned: int
    skipped: int
    ran: int
    failed: int


def run_sweep(
    config: SweepConfig,
    *,
    show_progress: bool = True,
    loader: Callable[[str, str, str], LoadedModel] = load_model,
    backend_factory: Callable[..., Backend] = HFBackend,
) -> SweepSummary:
    """Run every unfinished cell of ``config`` into ``config.out/results.sqlite`` and render the report."""
    from longreach.report import render_report

    plan = Plan.from_config(config)
    cells = plan.cells()
    tasks = {parsed.spec: parsed.task for parsed in plan.tasks}
    stacks = {stack.repr: stack for stack in plan.stacks}
    finished = _check_resume(config)
    todo = [cell for cell in cells if cell.key not in finished]
    backend: Backend | None = None
    facts: dict[str, Any] = {}
    if config.backend == "openai" and config.executor == "local":
        backend, facts = build_backend(config)
        tokenizer = backend.tokenizer
    elif config.backend == "openai":
        tokenizer = build_backend(config)[0].tokenizer
    else:
        tokenizer = load_tokenizer(resolve(config.model))
    _check_lengths_fit(plan, tokenizer)
    console = Console(stderr=True, quiet=not show_progress)
    failed = 0
    if todo:
        with ResultsStore(config.out) as store:
            if config.executor == "ray":
                results = ray_results(todo, config, lambda info: _store_run_meta(store, config, info))
            else:
                if backend is None:
                    with console.status(f"loading {config.model} ({config.dtype})"):
                        loaded = loader(config.model, config.dtype, config.device)
                    _check_capacity(loaded, [cell for cell in todo if not _bounded(stacks[cell.method])])
                    stacks = _resolve_auto(stacks, loaded, store, config, console)
                    backend = backend_factory(loaded, reuse_prefix=config.reuse_prefix)
                    facts = _loaded_facts(loaded)
                _store_run_meta(store, config, facts)
                workers = getattr(backend, "concurrency", 1)
                results = local_results(
                    todo,
                    lambda cell: run_cell(cell, tasks[cell.task], stacks[cell.method], backend, config.seed),
                    workers,
                )
            failed = _record(results, todo, store, console)
    render_report(config.out, threshold=config.threshold)
    return SweepSummary(config.out, len(cells), len(cells) - len(todo), len(todo), failed)


def build_backend(
    config: SweepConfig, loader: Callable[[str, str, str], LoadedModel] = load_model
) -> tuple[Backend, dict[str, Any]]:
    """The backend a config asks for and the model facts for provenance (loads weights for ``hf``)."""
    global BACKENDS_BUILT
    BACKENDS_BUILT += 1
    if config.backend == "openai":
        local = load_tokenizer(resolve(config.tokenizer)) if config.tokenizer else None
        backend = OpenAIBackend(
            config.base_url,
            config.model,
            api=config.api,  # type: ignore[arg-type]
            tokenizer=local,
            concurrency=config.concurrency,
            timeout=config.timeout,
            retries=config.retries,
        )
        zoo = ZOO.get(config.model) or ZOO.get(config.tokenizer)
        facts = {
            "name": config.model,
            "source": f"{config.base_url} ({config.api})",
            "native_context_length": zoo.native_context_length if zoo else None,
            "dtype": "served",
        }
        return backend, facts
    loaded = loader(config.model, config.dtype, config.device)
    return HFBackend(loaded), _loaded_facts(loaded)


def _loaded_facts(loaded: LoadedModel) -> dict[str, Any]:
    return {
        "name": loaded.name,
        "source": loaded.source,
        "native_context_length": loaded.native_context_length,
        "dtype": loaded.dtype,
    }


def _check_resume(config: SweepConfig) -> set[str]:
    """Keys of the cells already finished in ``config.out`` (empty for a new folder)."""
    if not (config.out / STORE_NAME).is_file():
        return set()
    with ResultsStore(config.out) as store:
        stored = store.meta().get("config") or {}
        if store.count() and not config.resume:
            raise LongreachError(
                f"{config.out} already holds results; pass --resume to continue it or pick a new --out"
            )
        for key in _IDENTITY:
            if key in stored and stored[key] != getattr(config, key):
                raise LongreachError(
                    f"cannot resume {config.out}: it was run with {key}={stored[key]!r}, not "
                    f"{getattr(config, key)!r}; use the same {key} or a new --out"
                )
        return store.finished_keys()


def _check_lengths_fit(plan: Plan, tokenizer: Any) -> None:
    """Generate one sample per (task, length) so an impossible length fails before the weights load."""
    depth = plan.config.depths[0]
    for parsed in plan.tasks:
        for length in plan.config.lengths:
            try:
                parsed.task.generate(tokenizer, length, depth, plan.config.seed, 0)
            except LongreachError as exc:
                raise LongreachError(f"{parsed.spec} at {length} tokens: {exc}") from None


def _bounded(stack: MethodStack) -> bool:
    """True when the stack's reader keeps positions and memory bounded whatever the input length."""
    reader = stack.of_kind("reader")
    return bool(reader is not None and getattr(reader, "bounded_memory", False))


def _check_capacity(loaded: LoadedModel, cells: list[Cell]) -> None:
    """Refuse lengths the model cannot run at all: past an absolute position table, or beyond memory."""
    if not cells:
        return
    longest = max(cells, key=lambda cell: cell.context_length)
    budget = 128  # generation tokens on top of the prompt
    if loaded.hard_max_length is not None and longest.context_length + budget > loaded.hard_max_length:
        raise LongreachError(
            f"{loaded.name} has absolute positions up to {loaded.hard_max_length} tokens; "
            f"{longest.context_length} tokens cannot run. Use lengths <= {loaded.hard_max_length - budget}"
        )
    need = loaded.kv_bytes_per_token * (longest.context_length + budget)
    available = psutil.virtual_memory().available
    if need > available:
        raise LongreachError(
            f"{longest.context_length} tokens need {need / 2**30:.1f} GiB of KV cache for {loaded.name} "
            f"({loaded.dtype}); {available / 2**30:.1f} GiB is available. Use shorter lengths or a cache method"
        )


def _store_run_meta(store: ResultsStore, config: SweepConfig, facts: dict[str, Any]) -> None:
    meta = store.meta()
    flat = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}
    updates: dict[str, Any] = {"config": flat, "threshold": config.threshold}
    if "provenance" not in meta:
        updates["provenance"] = provenance(
            facts["name"], facts["source"], facts["native_context_length"], facts["dtype"], config.seed
        )
        updates["provenance"]["backend"] = config.backend
        updates["provenance"]["executor"] = config.executor
        updates["provenance"]["device"] = config.device
        if config.device.startswith("cuda"):
            updates["provenance"]["gpu"] = torch.cuda.get_device_name(config.device)
    store.set_meta(**updates)


def _resolve_auto(
    stacks: dict[str, MethodStack], loaded: LoadedModel, store: ResultsStore, config: SweepConfig, console: Console
) -> dict[str, MethodStack]:
    """Calibrate ``auto`` stacks once (the choice is kept in the store, so a resumed run reuses it)."""
    chosen = store.meta().get("calibration", {})
    resolved = {}
    for spec, stack in stacks.items():
        if spec in chosen:
            resolved[spec] = parse_stack(chosen[spec]["resolved"])
            continue
        with console.status(f"calibrating {spec} on {loaded.name}"):
            resolved[spec], result = auto.resolve(stack, loaded, config.seed)
        if result is not None:
            chosen[spec] = {"resolved": resolved[spec].repr, "nll": result.nll}
            console.print(f"{spec} -> {resolved[spec].repr} (answer NLL {result.nll[result.chosen]:.3f})")
    store.set_meta(calibration=chosen)
    return resolved


def _cost(cell: Cell) -> float:
    """Relative cost of a cell for the ETA: linear layers plus (causal) attention's quadratic part."""
    return cell.context_length * (1.0 + cell.context_length / 16384)


def _record(results: Iterator[CellResult], todo: list[Cell], store: ResultsStore, console: Console) -> int:
    """Store each result as it arrives (the driver is the only writer); returns the number of failed cells."""
    failed = 0
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
        bar = progress.add_task("sweep", total=sum(map(_cost, todo)) or 1, done=0, cells=len(todo))
        for done, result in enumerate(results, start=1):
            cell = result.cell
            depth = "-" if cell.depth is None else f"{cell.depth:g}"
            mode = "" if cell.mode == "aware" else f" ({cell.mode})"
            store.record(result)
            if result.status == "error":
                failed += 1
                progress.console.print(f"[red]cell failed[/red] {cell.key}: {result.error}")
            progress.update(
                bar,
                advance=_cost(cell),
                done=done,
                description=f"{cell.task} {cell.context_length} d={depth} #{cell.index} [{cell.method}]{mode}",
            )
    return failed


def run_cell(cell: Cell, task: Task, stack: Any, backend: Backend, seed: int) -> CellResult:
    """Generate the cell's sample, run it, score it. A server that cannot be reached stops the sweep."""
    try:
        sample = task.generate(backend.tokenizer, cell.context_length, cell.depth or 0.0, seed, cell.index)
        request = Request(
            sample.prompt, sample.max_new_tokens, sample.stop, question_offset=len(sample.context), mode=cell.mode
        )
        generation = backend.generate([request], stack)[0]
        score = task.score(sample, generation.text)
    except BackendUnavailable as exc:
        raise BackendUnavailable(
            f"{exc}. Finished cells are saved; rerun with --resume once the server is back"
        ) from None
    except (LongreachError, RuntimeError, ValueError, MemoryError) as exc:
        return CellResult(cell, "error", error=f"{type(exc).__name__}: {exc}")
    meta = {k: v for k, v in sample.meta.items() if k not in ("realized_tokens", "realized_depth")}
    meta["reused_tokens"] = generation.reused_tokens
    if generation.prompt_tokens and generation.prompt_tokens != sample.meta["realized_tokens"]:
        meta["generated_tokens_mismatch"] = sample.meta["realized_tokens"]  # e.g. a server's chat template
    meta["decode_seconds"] = generation.decode_seconds
    meta["decode_steps"] = generation.decode_steps
    meta["compressed_kv_bytes"] = generation.compressed_kv_bytes
    if generation.peak_gpu_mb:
        meta["peak_gpu_mb"] = generation.peak_gpu_mb
    return CellResult(
        cell,
        "ok",
        score=score,
        seconds=generation.seconds,
        prefill_seconds=generation.prefill_seconds,
        peak_rss_mb=generation.peak_rss_mb,
        kv_cache_bytes=generation.kv_cache_bytes,
        realized_tokens=generation.prompt_tokens or sample.meta["realized_tokens"],
        realized_depth=sample.meta.get("realized_depth"),
        new_tokens=generation.new_tokens,
        prediction=generation.text,
        answers=list(sample.answers),
        meta=meta,
    )


_run_cell = run_cell
