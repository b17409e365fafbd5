"""Suites as data: a name for a list of task specs (``data/suites.yaml``; ``longreach eval --suite NAME``).

A suite may take arguments, appended to each of its task specs: the released-benchmark suites need the data
folder, ``--suite longbench:data=DIR`` (``knobs`` in the YAML names the arguments a suite requires).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import yaml

from longreach import params
from longreach.errors import LongreachError
from longreach.registry import Registry
from longreach.tasks.base import TASKS, parse_task


@dataclass(frozen=True)
class Suite:
    """A named list of task specs and the arguments (``knobs``) a user must give it."""

    summary: str
    tasks: tuple[str, ...]
    knobs: tuple[str, ...] = ()

    def specs(self, name: str, args: list[str]) -> tuple[str, ...]:
        """The task specs with the suite's arguments appended (``data=DIR`` -> ``longbench:lcc:data=DIR``)."""
        given = {arg.split("=", 1)[0] for arg in args}
        missing = [knob for knob in self.knobs if knob not in given]
        if missing:
            raise LongreachError(f"suite {name} needs {missing[0]}=..., e.g. --suite {name}:{missing[0]}=DIR")
        return tuple(spec + "".join(":" + arg for arg in args) for spec in self.tasks)


SUITES: Registry[Suite] = Registry("suite", packages=("longreach.tasks",))


def suite_tasks(names: str) -> tuple[str, ...]:
    """``"ruler-lite,longbench:data=DIR"`` -> the task specs of those suites, in order, without duplicates."""
    specs: dict[str, None] = {}
    for text in (n.strip() for n in names.split(",") if n.strip()):
        name, args = params.split_spec(text)
        specs.update(dict.fromkeys(SUITES.get(name).specs(name, args)))
    if not specs:
        raise LongreachError(f"no suite given in {names!r}; valid: {', '.join(SUITES.names())}")
    return tuple(specs)


def _check(spec: str, knobs: tuple[str, ...]) -> None:
    """A suite naming an unknown task or knob fails loudly when the registry loads (a suite that takes
    arguments has its specs' names and knobs checked; the tasks are built once the arguments are given)."""
    if not knobs:
        parse_task(spec)
        return
    name, args = params.split_spec(spec)
    params.parse_values(TASKS.get(name).family, name, args)


def _register_suites() -> None:
    text = importlib.resources.files("longreach.tasks").joinpath("data/suites.yaml").read_text()
    for name, entry in yaml.safe_load(text).items():
        knobs = tuple(entry.get("knobs") or ())
        for spec in entry["tasks"]:
            _check(spec, knobs)
        SUITES.add(name, Suite(summary=entry["summary"], tasks=tuple(entry["tasks"]), knobs=knobs))


_register_suites()
