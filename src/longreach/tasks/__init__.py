"""Task families (pure generators + scorers), one file each, registered where defined; their variants and suites
are data (``data/variants.yaml``, ``data/suites.yaml``). The registries discover this package on first use."""

from longreach.tasks.base import (
    FAMILIES,
    TASKS,
    ParsedTask,
    Sample,
    Task,
    TaskEntry,
    parse_task,
    parse_tasks,
    register_family,
)
from longreach.tasks.suites import SUITES, Suite, suite_tasks

__all__ = [
    "FAMILIES",
    "SUITES",
    "TASKS",
    "ParsedTask",
    "Sample",
    "Suite",
    "Task",
    "TaskEntry",
    "parse_task",
    "parse_tasks",
    "register_family",
    "suite_tasks",
]
