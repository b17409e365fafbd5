"""Task variants as data: ``data/variants.yaml`` names each variant's family and knobs (RULER's eight NIAH
variants, the needle-threading, biography, database... variants). Registered into :data:`TASKS` when the registry
discovers this package."""

from __future__ import annotations

import importlib.resources

import yaml

from longreach.tasks.base import FAMILIES, TASKS, TaskEntry


def _register_variants() -> None:
    text = importlib.resources.files("longreach.tasks").joinpath("data/variants.yaml").read_text()
    for name, entry in yaml.safe_load(text).items():
        family = FAMILIES.get(entry["family"])
        TASKS.add(name, TaskEntry(family=family, defaults=dict(entry.get("knobs") or {}), summary=entry["summary"]))


_register_variants()
