"""A study as data: YAML naming the model, row sets (lists of method specs), and stages, each a sweep with its own
tasks, lengths, depths, samples, methods, backend (peer tools run as stages on their own backend, on the same
instances) and an optional prune rule on an earlier stage. A study may also train models first (``train``:
long-context recipes, :mod:`longreach.train`) and evaluate them next to the base model (a stage's ``models``).

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

Training (each model is trained once, resumably, into ``OUT/train/NAME``; a stage naming it in ``models`` runs once
more on the trained folder, into ``OUT/STAGE@NAME``, its rows labelled ``METHOD (NAME)``)::

    train:
      settings: {data: "tasks:niah_multikey_1", length: 2k, steps: 20, batch_tokens: 8k}   # shared by every model
      models:
        abf: {recipe: "abf:theta=100000"}
        yarn: {recipe: "yarn:factor=2", steps: 30}                                          # its own steps
    stages:
      - name: inside
        models: [base, abf, yarn]                                                           # base: the study's model
        ...

A study may extend another (``extends: FILE``, relative to its own file): the other file's document with this
one's keys laid over it, mappings merged key by key and anything else replaced, e.g. the same experiment in
another dtype with fewer training steps::

    extends: train_recipes.yaml
    name: train_recipes_fp32
    dtype: fp32
    train: {settings: {steps: 16}}

Every value is validated here, before anything runs: an unknown key, task, method, backend or length fails with
one line naming the stage and the bad value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longreach import params
from longreach.backends import parse_backend
from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.prompts import PROMPT_CHOICES
from longreach.registry import did_you_mean
from longreach.results import STORE_NAME, ResultsStore
from longreach.runner import Grid, parse_depths, parse_lengths
from longreach.tasks import parse_tasks
from longreach.train.data import parse_data
from longreach.train.loop import TrainConfig, parse_lora
from longreach.train.recipe import recipe_from_spec

_STUDY_KEYS = (
    "name", "description", "model", "dtype", "prompt", "seed", "baseline", "threshold", "rows", "train", "stages",
)  # fmt: skip
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
    "models",
)
_PRUNE_KEYS = ("stage", "below", "keep")
_TRAIN_KEYS = ("settings", "models")
_TRAINED_KEYS = ("recipe", "data", "length", "steps", "batch_tokens", "lora", "lr", "seed", "prompt", "save_every")
BASE = "base"  # in a stage's models: the study's own model


@dataclass(frozen=True)
class Prune:
    """Drop the rows whose mean score in ``stage`` is below ``below`` (``keep`` rows always run)."""

    stage: str
    below: float
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class Trained:
    """A model the study trains before evaluating it: ``longreach train`` settings (lengths in tokens)."""

    name: str
    recipe: str
    data: str
    length: int
    steps: int
    batch_tokens: int = 8192
    lora: str = "r=16"
    lr: float = 0.0
    seed: int = 0
    prompt: str | None = None  # the study's prompt when None
    save_every: int = 10


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
    models: tuple[str, ...] = (BASE,)  # the study's model (base) and/or models the study trains


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
    trained: tuple[Trained, ...] = ()
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    def trained_model(self, name: str) -> Trained:
        for model in self.trained:
            if model.name == name:
                return model
        raise LongreachError(f"study {self.name}: no trained model {name!r}")

    def check_models(self, names: list[str]) -> set[str]:
        """``names`` as a set, each the base model (``base``) or one the study trains; an unknown name is one line."""
        valid = [BASE] + [model.name for model in self.trained]
        for name in names:
            if name not in valid:
                raise LongreachError(f"study {self.name}: no model {name!r}; {did_you_mean(name, valid)}")
        return set(names)

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


def _one_length(value: Any, where: str) -> int:
    lengths = parse_lengths(str(value))
    if len(lengths) != 1:
        raise LongreachError(f"{where}: expected one length; got {value!r}")
    return lengths[0]


def _trained(document: Any) -> tuple[Trained, ...]:
    """The ``train`` section: shared ``settings`` and one mapping per model (``recipe`` at least), each validated as
    ``longreach train`` would (recipe, data, LoRA and the numbers) without loading anything."""
    if document is None:
        return ()
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict) or not document["models"]:
        raise LongreachError("train: expected a mapping with settings and models (name -> {recipe: ...})")
    _check_keys("train", document, _TRAIN_KEYS)
    shared = document.get("settings") or {}
    if not isinstance(shared, dict):
        raise LongreachError(f"train.settings: expected a mapping; got {shared!r}")
    _check_keys("train.settings", shared, _TRAINED_KEYS)
    models = []
    for name, own in document["models"].items():
        where = f"train.models.{name}"
        if str(name) == BASE or not isinstance(own, dict):
            raise LongreachError(f"{where}: expected a mapping with a recipe (and a name other than {BASE!r})")
        _check_keys(where, own, _TRAINED_KEYS)
        settings = {**shared, **own}
        for key in ("recipe", "data", "length", "steps"):
            if key not in settings:
                raise LongreachError(f"{where}: missing {key!r} (in the model or in train.settings)")
        model = Trained(
            name=str(name),
            recipe=str(settings["recipe"]),
            data=str(settings["data"]),
            length=_one_length(settings["length"], where),
            steps=int(settings["steps"]),
            batch_tokens=_one_length(settings.get("batch_tokens", 8192), where),
            lora=str(settings.get("lora", "r=16")),
            lr=float(settings.get("lr", 0.0)),
            seed=int(settings.get("seed", 0)),
            prompt=str(settings["prompt"]) if settings.get("prompt") is not None else None,
            save_every=int(settings.get("save_every", 10)),
        )
        try:  # as `longreach train` validates, but a data folder is checked when the model trains
            recipe_from_spec(model.recipe), parse_lora(model.lora), parse_data(model.data, check_folders=False)
            params.require(model.length >= 2 and model.steps >= 1, f"length >= 2 and steps >= 1; got {settings}")
            params.require(model.prompt in (None, *PROMPT_CHOICES), f"prompt: one of {', '.join(PROMPT_CHOICES)}")
        except LongreachError as exc:
            raise LongreachError(f"{where}: {exc}") from None
        models.append(model)
    return tuple(models)


def train_config(
    model: Trained, base: str, out: Path, dtype: str, prompt: str, device: str = "cpu", quiet: bool = True
) -> TrainConfig:
    """The ``longreach train`` run of a study's trained model (resumable: a rerun continues it)."""
    return TrainConfig(
        model=base,
        recipe=model.recipe,
        data=model.data,
        length=model.length,
        steps=model.steps,
        out=out,
        lora=model.lora,
        lr=model.lr,
        batch_tokens=model.batch_tokens,
        dtype=dtype,
        device=device,
        seed=model.seed,
        save_every=model.save_every,
        resume=True,
        prompt=model.prompt or prompt,
        quiet=quiet,
    )


def _stage(entry: Any, rows: dict[str, list[str]], seen: list[str], trained: tuple[str, ...] = ()) -> Stage:
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
    models = tuple(dict.fromkeys(_items(entry.get("models", [BASE]), where)))
    for name in models:
        if name != BASE and name not in trained:
            valid = ", ".join([BASE, *trained])
            raise LongreachError(f"{where}: unknown model {name!r}; valid: {valid} (trained in train.models)")
    if prune is not None and models != (BASE,):
        raise LongreachError(f"{where}: a prune rule judges the base model's rows; give it a stage of models [base]")
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
        models=models,
    )


def load_study(path: Path) -> Study:
    """Read and validate a study file (its ``extends`` resolved)."""
    return parse_study(_study_document(Path(path), ()), str(path))


def _study_document(path: Path, seen: tuple[Path, ...]) -> Any:
    """The YAML document of a study file, laid over the document it ``extends`` (``seen``: the files that extend it)."""
    if not path.is_file():
        raise LongreachError(f"{seen[-1]}: extends {path}, which is not a file" if seen else f"no study file {path}")
    if path.resolve() in (p.resolve() for p in seen):
        raise LongreachError(f"{path}: extends itself through {' -> '.join(str(p) for p in seen)}")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LongreachError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict) or "extends" not in document:
        return document
    base = _study_document(path.parent / str(document["extends"]), (*seen, path))
    if not isinstance(base, dict):
        raise LongreachError(f"{path}: extends {path.parent / str(document['extends'])}, which is not a study mapping")
    return _laid_over(base, {key: value for key, value in document.items() if key != "extends"})


def _laid_over(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top``'s keys over ``base``'s: mappings merged key by key, any other value replaced."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = _laid_over(below, value) if isinstance(below, dict) and isinstance(value, dict) else value
    return merged


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
    prompt = document.get("prompt", "auto")
    if prompt not in PROMPT_CHOICES:
        raise LongreachError(f"{where}: prompt must be one of {', '.join(PROMPT_CHOICES)}; got {prompt!r}")
    trained = _trained(document.get("train"))
    stages: list[Stage] = []
    for entry in document["stages"] or []:
        stages.append(_stage(entry, rows, [s.name for s in stages], tuple(t.name for t in trained)))
    if not stages:
        raise LongreachError(f"{where}: a study needs at least one stage")
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
        trained=trained,
        source=document,
    )
