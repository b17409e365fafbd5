"""``local``: cells run in this process on one worker (one model load). ``workers`` threads share it (more than one
helps only a backend that waits on a server); ``shard=i/n`` runs the i-th of n contiguous slices of the plan's
cells, so n processes (on n devices, or sharing one) can fill one output folder together."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import ClassVar

from longreach.errors import LongreachError
from longreach.results import Cell, Record
from longreach.runner.executors.base import ExecutorSpec, register_executor
from longreach.runner.worker import Job, Started, Worker


@register_executor
@dataclass(frozen=True)
class Local(ExecutorSpec):
    """In this process."""

    workers: int = field(default=0, metadata={"help": "threads sharing the backend (0: the backend's concurrency)"})
    shard: tuple[int, ...] = field(default=(0, 1), metadata={"help": "i/n: run the i-th of n slices of the cells"})

    name: ClassVar[str] = "local"
    summary: ClassVar[str] = "in this process; shard=i/n splits a run over processes"

    def __post_init__(self) -> None:
        if len(self.shard) != 2 or not 0 <= self.shard[0] < self.shard[1]:
            raise LongreachError(f"local: shard must be i/n with 0 <= i < n, e.g. shard=0/4; got {self.shard}")
        if self.workers < 0:
            raise LongreachError(f"local: workers must be >= 0; got {self.workers}")

    def select(self, cells: list[Cell]) -> list[Cell]:
        index, count = self.shard
        return cells[index * len(cells) // count : (index + 1) * len(cells) // count]

    def results(self, job: Job, todo: list[Cell]) -> Iterator[tuple[Record, Started]]:
        worker = Worker(job)
        yield from ((record, worker.started) for record in _threaded(worker, todo, self.workers))


def _threaded(worker: Worker, todo: list[Cell], workers: int) -> Iterator[Record]:
    """Run cells ``workers`` at a time (0: the backend's concurrency), yielding records as they finish."""
    threads = workers or getattr(worker.backend, "concurrency", 1)
    if threads <= 1:
        yield from map(worker.run, todo)
        return
    pending = iter(todo)
    with ThreadPoolExecutor(threads) as pool:
        running: set[Future[Record]] = set()
        try:
            for cell in pending:
                running.add(pool.submit(worker.run, cell))
                if len(running) >= 2 * threads:
                    break
            while running:
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
                    cell = next(pending, None)
                    if cell is not None:
                        running.add(pool.submit(worker.run, cell))
        finally:
            for future in running:
                future.cancel()
