"""``ray``: cells fan out over a Ray cluster (a local one by default, or ``address``); each worker is an actor
holding one :class:`~longreach.runner.worker.Worker` (one model load), built exactly as the local executor builds
its own, then sent cells one at a time."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from longreach.backends.openai import BackendUnavailable
from longreach.errors import LongreachError
from longreach.results import Cell, Record
from longreach.runner.executors.base import ExecutorSpec, register_executor
from longreach.runner.worker import Job, Started, Worker


class _Actor:
    """A Ray actor around one worker."""

    def __init__(self, job: Job) -> None:
        self.worker = Worker(job)

    def started(self) -> Started:
        return self.worker.started

    def run(self, cell: Cell) -> Record:
        return self.worker.run(cell)


@register_executor
@dataclass(frozen=True)
class Ray(ExecutorSpec):
    """Over a Ray cluster."""

    workers: int = field(default=0, metadata={"help": "actors, each loading the model once (0: one per CPU)"})
    address: str = field(default="", metadata={"help": "an existing cluster (default: start a local one)"})

    name: ClassVar[str] = "ray"
    summary: ClassVar[str] = "over a Ray cluster, one model load per actor"

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise LongreachError(f"ray: workers must be >= 0; got {self.workers}")

    def results(self, job: Job, todo: list[Cell]) -> Iterator[tuple[Record, Started]]:
        try:
            import ray
        except ImportError:
            raise LongreachError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
        started_here = not ray.is_initialized()
        if started_here:
            try:
                ray.init(
                    address=self.address or None,
                    include_dashboard=False,
                    logging_level="ERROR",
                    log_to_driver=False,
                    runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
                )
            except ConnectionError as exc:
                raise LongreachError(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from None
        try:
            yield from self._fan_out(ray, job, todo)
        finally:
            if started_here:
                ray.shutdown()

    def _fan_out(self, ray: Any, job: Job, todo: list[Cell]) -> Iterator[tuple[Record, Started]]:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = max(1, min(self.workers or cpus, len(todo)))
        actor_class = ray.remote(num_cpus=1)(_Actor)
        actors = [actor_class.remote(job) for _ in range(count)]
        started = dict(zip(actors, _get(ray, [actor.started.remote() for actor in actors]), strict=True))
        queue = list(reversed(todo))
        running: dict[Any, Any] = {}
        for actor in actors:
            if queue:
                running[actor.run.remote(queue.pop())] = actor
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor = running.pop(done[0])
            yield _get(ray, done[0]), started[actor]
            if queue:
                running[actor.run.remote(queue.pop())] = actor


def _get(ray: Any, refs: Any) -> Any:
    """``ray.get`` that turns a worker's user error (bad input, unreachable server) back into a one-line error."""
    try:
        return ray.get(refs)
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as exc:
        cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
        if isinstance(cause, BackendUnavailable | LongreachError):
            raise LongreachError(str(cause).splitlines()[-1]) from None
        raise
