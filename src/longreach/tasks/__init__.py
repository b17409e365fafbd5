"""Task families (pure generators + scorers) and their variants, registered from ``data/variants.yaml``."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import yaml

from longreach.errors import LongreachError
from longreach.registry import Registry
from longreach.tasks.aggregation import Aggregation
from longreach.tasks.base import TASKS, ParsedTask, Sample, Task, TaskEntry, parse_task, parse_tasks
from longreach.tasks.biographies import Biographies
from longreach.tasks.confusers import Confusers
from longreach.tasks.database import Database
from longreach.tasks.jsonl import JsonlTask
from longreach.tasks.longgen import LongGeneration
from longreach.tasks.needle import NeedleTask
from longreach.tasks.ordering import Ordering
from longreach.tasks.passkey import Passkey
from longreach.tasks.threading import Threading
from longreach.tasks.variables import VariableTracking


@dataclass(frozen=True)
class Suite:
    """A named list of task specs."""

    summary: str
    tasks: tuple[str, ...]


FAMILIES: dict[str, type[Task]] = {
    cls.family: cls
    for cls in (
        Passkey,
        NeedleTask,
        JsonlTask,
        Threading,
        VariableTracking,
        Aggregation,
        Biographies,
        Database,
        Ordering,
        Confusers,
        LongGeneration,
    )
}


SUITES: Registry[Suite] = Registry("suite")


def suite_tasks(names: str) -> tuple[str, ...]:
    """``"ruler-lite,taxonomy"`` -> the task specs of those suites, in order, without duplicates."""
    specs: dict[str, None] = {}
    for name in (n.strip() for n in names.split(",") if n.strip()):
        specs.update(dict.fromkeys(SUITES.get(name).tasks))
    if not specs:
        raise LongreachError(f"no suite given in {names!r}; valid: {', '.join(SUITES.names())}")
    return tuple(specs)


def _register_suites() -> None:
    text = importlib.resources.files("longreach.tasks").joinpath("data/suites.yaml").read_text()
    for name, entry in yaml.safe_load(text).items():
        for spec in entry["tasks"]:
            parse_task(spec)  # a suite naming an unknown task or knob fails loudly at import of the registry
        SUITES.add(name, Suite(summary=entry["summary"], tasks=tuple(entry["tasks"])))


def _register_variants() -> None:
    text = importlib.resources.files("longreach.tasks").joinpath("data/variants.yaml").read_text()
    for name, entry in yaml.safe_load(text).items():
        family = FAMILIES[entry["family"]]
        TASKS.add(name, TaskEntry(family=family, defaults=dict(entry.get("knobs") or {}), summary=entry["summary"]))


_register_variants()
_register_suites()

__all__ = [
    "TASKS",
    "SUITES",
    "FAMILIES",
    "Suite",
    "suite_tasks",
    "ParsedTask",
    "Sample",
    "Task",
    "TaskEntry",
    "parse_task",
    "parse_tasks",
]
