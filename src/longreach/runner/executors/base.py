"""Executors: where cells run. Typed specs registered in :data:`EXECUTORS` (``local:shard=0/4``,
``ray:workers=4``). Every executor builds its workers with :class:`~longreach.runner.worker.Worker`, so local and
Ray runs build the same backend, check the same capacity and calibrate ``auto`` the same way.

An executor yields ``(record, started)`` pairs as cells finish, ``started`` being what the worker that ran the cell
reported (its provenance); the driver is the only writer of the store. A
:class:`~longreach.backends.openai.BackendUnavailable` stops the run: cells in flight are abandoned (not stored, so
``--resume`` runs them again) and the error reaches the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from longreach import params
from longreach.registry import Registry
from longreach.results import Cell, Record
from longreach.runner.worker import Job, Started


@dataclass(frozen=True)
class ExecutorSpec:
    """Base class of executor specs: the fields are the executor's typed options."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def select(self, cells: list[Cell]) -> list[Cell]:
        """The cells this process runs (all, unless the executor shards them)."""
        return cells

    def results(self, job: Job, todo: list[Cell]) -> Iterator[tuple[Record, Started]]:
        raise NotImplementedError


EXECUTORS: Registry[type[ExecutorSpec]] = Registry("executor", packages=("longreach.runner.executors",))


register_executor = EXECUTORS.by("name")  # class decorator: an executor spec registers itself under its name


def parse_executor(spec: str) -> ExecutorSpec:
    """``"local:shard=0/4"`` or ``"ray:workers=4"`` -> a validated executor spec."""
    return params.from_spec(EXECUTORS, spec)
