"""Suites as data: a name for a list of task specs (``data/suites.yaml``; ``longreach eval --suite NAME``)."""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import yaml

from longreach.errors import LongreachError
from longreach.registry import Registry
from longreach.tasks.base import parse_task


@dataclass(frozen=True)
class Suite:
    """A named list of task specs."""

    summary: str
    tasks: tuple[str, ...]


SUITES: Registry[Suite] = Registry("suite", packages=("longreach.tasks",))


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
            parse_task(spec)  # a suite naming an unknown task or knob fails loudly when the registry loads
        SUITES.add(name, Suite(summary=entry["summary"], tasks=tuple(entry["tasks"])))


_register_suites()
