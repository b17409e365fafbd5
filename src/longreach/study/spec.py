"""A study as data: YAML naming the model, row sets (lists of method specs), and stages, each a sweep with its own
tasks, lengths, depths, samples, methods, backend (peer tools run as stages on their own backend, on the same
instances) and an optional prune rule on an earlier stage.

    name: context_extension
    model: smollm2-135m
    dtype: bf16
    prompt: raw
    baseline: none
    rows:
      extension: [none, "yarn:factor=4", "hf:rope_type=dynamic:factor=4"]
    stages:
      - name: passkey16
        tasks: [passkey]
        lengths: [16k]
        depths: [0, 0.5, 1]
        methods: extension
        reuse_prefix: true
      - name: passkey32
        tasks: [passkey]
        lengths: [32k]
        methods: extension
        prune: {stage: passkey16, below: 0.5, keep: [none]}

Every value is validated here, before anything runs: an unknown key, task, method, backend or length fails with
one line naming the stage and the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longreach.backends import parse_backend
from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.prompts import PROMPT_CHOICES
from longreach.registry import did_you_mean
from longreach.results import STORE_NAME, ResultsStore
from longreach.runner import Grid, parse_depths, parse_lengths
from longreach.tasks import parse_tasks

_STUDY_KEYS = ("name", "description", "model", "dtype", "prompt", "seed", "baseline", "threshold", "rows", "stages")
_STAGE_KEYS = (
    "name",
    "description",
    "tasks",
    "lengths",
    "depths",
    "samples",
    "methods",
    "question_modes",
    "backend",
    "prompt",
    "interleave",
    "reuse_prefix",
    "prune",
    "label",
)
_PRUNE_KEYS = ("stage", "below", "keep")


@dataclass(frozen=True)
class Prune:
    """Drop the rows whose mean score in ``stage`` is below ``below`` (``keep`` rows always run)."""

    stage: str
    below: float
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One sweep of a study."""

    name: str
    grid: Grid
    backend: str = "hf"
    prompt: str | None = None
    interleave: bool = False
    reuse_prefix: bool = False
    prune: Prune | None = None
    description: str = ""
    label: str = ""  # kept apart in the merged report (its rows read "METHOD (LABEL)"), e.g. a timing stage


@dataclass(frozen=True)
class Study:
    name: str
    model: str
    stages: tuple[Stage, ...]
    dtype: str = "bf16"
    prompt: str = "auto"
    seed: int = 0
    baseline: str | None = None
    threshold: float = 0.85
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise LongreachError(
            f"study {self.name}: no stage {name!r}; {did_you_mean(name, [s.name for s in self.stages])}"
        )


def _check_keys(where: str, given: dict[str, Any], valid: tuple[str, ...]) -> None:
    for key in given:
        if key not in valid:
            raise LongreachError(f"{where}: unknown key {key!r}; {did_you_mean(key, list(valid))}")


def _items(value: Any, where: str) -> list[str]:
    """A YAML list or a comma-separated string -> list of strings."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    raise LongreachError(f"{where}: expected a list or a comma-separated string; got {value!r}")


def _methods(value: Any, rows: dict[str, list[str]], where: str) -> tuple[str, ...]:
    """A row-set name, or a list of method specs and row-set names."""
    specs: list[str] = []
    for item in _items(value, where):
        specs.extend(rows.get(item, [item]))
    for spec in specs:
        try:
            parse_stack(spec)
        except LongreachError as exc:
            raise LongreachError(f"{where}: {exc}") from None
    return tuple(dict.fromkeys(specs))


def _stage(entry: Any, rows: dict[str, list[str]], seen: list[str]) -> Stage:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise LongreachError(f"each stage needs a name; got {entry!r}")
    where = f"stage {entry['name']}"
    _check_keys(where, entry, _STAGE_KEYS)
    if entry["name"] in seen:
        raise LongreachError(f"{where}: the name is used twice")
    for key in ("tasks", "lengths"):
        if key not in entry:
            raise LongreachError(f"{where}: missing {key!r}")
    tasks = tuple(p.spec for p in parse_tasks(",".join(_items(entry["tasks"], where))))
    grid = Grid(
        tasks=tasks,
        lengths=parse_lengths(",".join(_items(entry["lengths"], where))),
        methods=_methods(entry.get("methods", ["none"]), rows, where),
        depths=parse_depths(",".join(_items(entry.get("depths", [0.5]), where))),
        samples=int(entry.get("samples", 1)),
        question_modes=tuple(_items(entry.get("question_modes", ["aware"]), where)),
    )
    backend = str(entry.get("backend", "hf"))
    parse_backend(backend)
    prompt = entry.get("prompt")
    if prompt is not None and prompt not in PROMPT_CHOICES:
        raise LongreachError(f"{where}: prompt must be one of {', '.join(PROMPT_CHOICES)}; got {prompt!r}")
    prune = None
    if "prune" in entry:
        rule = entry["prune"]
        if not isinstance(rule, dict):
            raise LongreachError(f"{where}: prune must be a mapping with stage, below, keep")
        _check_keys(f"{where} prune", rule, _PRUNE_KEYS)
        if rule.get("stage") not in seen:
            raise LongreachError(f"{where}: prune names stage {rule.get('stage')!r}, which is not an earlier stage")
        keep = tuple(parse_stack(s).repr for s in _methods(rule.get("keep", []) or ["none"], rows, where))
        prune = Prune(rule["stage"], float(rule.get("below", 0.5)), keep if rule.get("keep") else ())
    return Stage(
        name=entry["name"],
        grid=grid,
        backend=backend,
        prompt=prompt,
        interleave=bool(entry.get("interleave", False)),
        reuse_prefix=bool(entry.get("reuse_prefix", False)),
        prune=prune,
        description=str(entry.get("description", "")),
        label=str(entry.get("label", "")),
    )


def load_study(path: Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    if not path.is_file():
        raise LongreachError(f"no study file {path}")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LongreachError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_study(document, str(path))


def recorded_study(folder: Path) -> Study:
    """The study a study folder was run from (each stage's store records it)."""
    for store_file in sorted(Path(folder).glob(f"*/{STORE_NAME}")):
        with ResultsStore(store_file.parent) as store:
            document = store.meta().get("study")
        if document:
            return parse_study(document, str(folder))
    raise LongreachError(f"{folder} holds no stage of a study; give the study file with --study")


def parse_study(document: Any, where: str) -> Study:
    """Validate a study document (the parsed YAML)."""
    if not isinstance(document, dict):
        raise LongreachError(f"{where}: expected a mapping with name, model and stages")
    _check_keys(where, document, _STUDY_KEYS)
    for key in ("name", "model", "stages"):
        if key not in document:
            raise LongreachError(f"{where}: missing {key!r}")
    rows = {str(k): _items(v, f"rows.{k}") for k, v in (document.get("rows") or {}).items()}
    stages: list[Stage] = []
    for entry in document["stages"] or []:
        stages.append(_stage(entry, rows, [s.name for s in stages]))
    if not stages:
        raise LongreachError(f"{where}: a study needs at least one stage")
    prompt = document.get("prompt", "auto")
    if prompt not in PROMPT_CHOICES:
        raise LongreachError(f"{where}: prompt must be one of {', '.join(PROMPT_CHOICES)}; got {prompt!r}")
    baseline = document.get("baseline")
    return Study(
        name=str(document["name"]),
        model=str(document["model"]),
        stages=tuple(stages),
        dtype=str(document.get("dtype", "bf16")),
        prompt=prompt,
        seed=int(document.get("seed", 0)),
        baseline=parse_stack(baseline).repr if baseline else None,
        threshold=float(document.get("threshold", 0.85)),
        description=str(document.get("description", "")),
        source=document,
    )
