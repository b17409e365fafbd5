"""Executors: where cells run. The driver (the sweep) writes every result into the store as it arrives.

- ``local``: in this process, one backend; ``workers`` cells at a time (threads; more than one only helps
  a backend that waits on a server, such as ``openai``).
- ``ray``: cells fan out over a Ray cluster (a local one by default, or ``ray_address``); each worker is an
  actor that builds its backend, loading the model, once, then runs cells sent to it one at a time.

Either way a :class:`~longreach.backends.openai.BackendUnavailable` stops the run: cells in flight are
abandoned (they are not stored, so ``--resume`` runs them again) and the error reaches the caller.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from longreach.errors import LongreachError
from longreach.runner.store import Cell, CellResult

EXECUTORS = ("local", "ray")


def local_results(todo: list[Cell], run_one: Callable[[Cell], CellResult], workers: int) -> Iterator[CellResult]:
    """Run cells in this process, ``workers`` at a time, yielding results as they finish."""
    if workers <= 1:
        for cell in todo:
            yield run_one(cell)
        return
    pending = iter(todo)
    with ThreadPoolExecutor(workers) as pool:
        running: set[Future[CellResult]] = set()
        try:
            for cell in pending:
                running.add(pool.submit(run_one, cell))
                if len(running) >= 2 * workers:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
                    cell = next(pending, None)
                    if cell is not None:
                        running.add(pool.submit(run_one, cell))
        finally:
            for future in running:
                future.cancel()


class CellWorker:
    """What a Ray actor holds: the parsed plan and one backend, built (the model loaded) once."""

    def __init__(self, config: Any) -> None:
        from longreach.runner.plan import Plan
        from longreach.runner.sweep import build_backend

        plan = Plan.from_config(config)
        self.seed = config.seed
        self.tasks = {parsed.spec: parsed.task for parsed in plan.tasks}
        self.stacks = {stack.repr: stack for stack in plan.stacks}
        self.backend, self.facts = build_backend(config)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def describe(self) -> dict[str, Any]:
        return {**self.facts, "worker": self.name}

    def run(self, cell: Cell) -> CellResult:
        from longreach.runner import sweep

        result = sweep.run_cell(cell, self.tasks[cell.task], self.stacks[cell.method], self.backend, self.seed)
        result.meta.update(worker=self.name, worker_model_loads=sweep.BACKENDS_BUILT)
        return result


def ray_results(todo: list[Cell], config: Any, on_facts: Callable[[dict[str, Any]], None]) -> Iterator[CellResult]:
    """Run cells on Ray actors (``config.workers`` of them, default: one per CPU of the cluster)."""
    try:
        import ray
    except ImportError:
        raise LongreachError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    from longreach.backends.openai import BackendUnavailable

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(
                address=config.ray_address or None,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
                runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
            )
        except ConnectionError as exc:
            raise LongreachError(f"cannot reach the Ray cluster at {config.ray_address!r}: {exc}") from None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = max(1, min(config.workers or cpus, len(todo)))
        actor_class = ray.remote(num_cpus=1)(CellWorker)
        actors = [actor_class.remote(config) for _ in range(count)]
        on_facts(ray.get(actors[0].describe.remote()))
        queue = list(reversed(todo))
        running: dict[Any, Any] = {}
        for actor in actors:
            if queue:
                running[actor.run.remote(queue.pop())] = actor
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                cause = exc.as_instanceof_cause()
                if isinstance(cause, BackendUnavailable | LongreachError):
                    raise LongreachError(str(cause).splitlines()[-1]) from None
                raise
            yield result
            if queue:
                running[actor.run.remote(queue.pop())] = actor
    finally:
        if started_here:
            ray.shutdown()
