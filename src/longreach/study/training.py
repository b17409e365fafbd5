"""A study's trained models: each is trained once into ``OUT/train/NAME`` (resumable; one process at a time, so
shards of a study never train the same model twice), then evaluated like the base model; and the table of what each
training run cost (wall time, tokens/s, peak RSS, loss)."""

from __future__ import annotations

import fcntl
import json
import statistics
from pathlib import Path
from typing import Any

from longreach.errors import LongreachError
from longreach.report.render import Table
from longreach.study.spec import BASE, Stage, Study, train_config
from longreach.train.loop import MODEL_DIR, TrainConfig, changed_setting, train

TRAIN_DIR = "train"
RECORD = "train.json"


def trained_dir(out: Path, name: str) -> Path:
    """Where the study's trained model ``name`` is trained (its ``model/`` folder is what the stages load)."""
    return Path(out) / TRAIN_DIR / name


def stage_folder(out: Path, stage: Stage, model: str) -> Path:
    """A stage's store for one of its models: ``OUT/STAGE`` for the base model, ``OUT/STAGE@NAME`` for a trained one."""
    return Path(out) / (stage.name if model == BASE else f"{stage.name}@{model}")


def stage_label(stage: Stage, model: str) -> str:
    """The label that keeps a model's rows apart in the merged report (``METHOD (NAME)``)."""
    return ", ".join(part for part in (stage.label, "" if model == BASE else model) if part)


def ensure_trained(study: Study, name: str, out: Path, device: str = "cpu", show_progress: bool = False) -> Path:
    """The model folder of the study's trained model ``name``: trained (or resumed from its newest checkpoint)
    unless ``train.json`` records a finished run with the same settings. Another process training it is waited for."""
    model, folder = study.trained_model(name), trained_dir(out, name)
    config = train_config(model, study.model, folder, study.dtype, study.prompt, device, quiet=not show_progress)
    config.out.mkdir(parents=True, exist_ok=True)
    with open(config.out.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if not _finished(config):
            train(config)
    return config.out / MODEL_DIR


def _finished(config: TrainConfig) -> bool:
    """Whether ``config.out`` holds this training run, finished. A record without its model folder (a run restored
    from a report, or one whose weights were deleted) is trained again."""
    record = config.out / RECORD
    if not record.is_file() or not (config.out / MODEL_DIR).is_dir():
        return False
    changed = changed_setting(json.loads(record.read_text())["settings"], config)
    if changed:
        key, was, now = changed
        raise LongreachError(
            f"{config.out} holds a finished training run with {key}={was!r}, the study now says {now!r}; delete that "
            "folder or give the model a new name"
        )
    return True


def training_records(study: Study, out: Path) -> dict[str, dict[str, Any]]:
    """``train.json`` of every trained model that finished, by name."""
    records = {}
    for model in study.trained:
        path = trained_dir(out, model.name) / RECORD
        if path.is_file():
            records[model.name] = json.loads(path.read_text())
    return records


def training_table(study: Study, out: Path) -> Table | None:
    """One row per trained model: recipe, length, steps, tokens, wall time, tokens/s, peak RSS, loss and the CPU it
    was trained on (a model trained again after its weights were lost may have run on another machine than the rest)."""
    if not study.trained:
        return None
    records = training_records(study, out)
    rows = []
    for model in study.trained:
        record = records.get(model.name)
        if record is None:
            rows.append([model.name, model.recipe, str(model.length), "not trained", "-", "-", "-", "-", "-", "-"])
            continue
        losses = record["losses"]
        fifth = max(1, len(losses) // 5)  # a fifth of the steps on each side: single steps are noisy (mixed data)
        rows.append([
            model.name,
            record["recipe"],
            str(model.length),
            str(record["steps"]),
            f"{record['tokens']:,}",
            f"{record['train_seconds']:.0f}",
            f"{record['tokens_per_s']:.0f}",
            f"{record['peak_rss_mb']:.0f}",
            f"{statistics.fmean(losses[:fifth]):.3f} -> {statistics.fmean(losses[-fifth:]):.3f}" if losses else "-",
            record.get("provenance", {}).get("cpu", "not recorded"),
        ])  # fmt: skip
    return Table(
        f"Study {study.name}: trained models",
        [
            "model",
            "recipe",
            "length",
            "steps",
            "tokens",
            "train seconds",
            "tokens/s",
            "peak RSS (MiB)",
            "loss (mean of the first fifth of the steps -> the last fifth)",
            "CPU",
        ],  # fmt: skip
        rows,
        f"Trained from {study.model} (dtype {study.dtype}) with `longreach train`, each into {TRAIN_DIR}/NAME; "
        "rows labelled (NAME) in the tables below are that model.",
    )
