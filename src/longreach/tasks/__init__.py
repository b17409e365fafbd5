"""Task families (pure generators + scorers) and their variants, registered from ``data/variants.yaml``."""

from __future__ import annotations

import importlib.resources

import yaml

from longreach.tasks.base import TASKS, ParsedTask, Sample, Task, TaskEntry, parse_task, parse_tasks
from longreach.tasks.jsonl import JsonlTask
from longreach.tasks.needle import NeedleTask
from longreach.tasks.passkey import Passkey

FAMILIES: dict[str, type[Task]] = {cls.family: cls for cls in (Passkey, NeedleTask, JsonlTask)}


def _register_variants() -> None:
    text = importlib.resources.files("longreach.tasks").joinpath("data/variants.yaml").read_text()
    for name, entry in yaml.safe_load(text).items():
        family = FAMILIES[entry["family"]]
        TASKS.add(name, TaskEntry(family=family, defaults=dict(entry.get("knobs") or {}), summary=entry["summary"]))


_register_variants()

__all__ = ["TASKS", "FAMILIES", "ParsedTask", "Sample", "Task", "TaskEntry", "parse_task", "parse_tasks"]
