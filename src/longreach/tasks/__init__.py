"""Task families (pure generators + scorers) and their variants, registered from ``data/variants.yaml``."""

from __future__ import annotations

import importlib.resources

import yaml

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


def _register_variants() -> None:
    text = importlib.resources.files("longreach.tasks").joinpath("data/variants.yaml").read_text()
    for name, entry in yaml.safe_load(text).items():
        family = FAMILIES[entry["family"]]
        TASKS.add(name, TaskEntry(family=family, defaults=dict(entry.get("knobs") or {}), summary=entry["summary"]))


_register_variants()

__all__ = ["TASKS", "FAMILIES", "ParsedTask", "Sample", "Task", "TaskEntry", "parse_task", "parse_tasks"]
