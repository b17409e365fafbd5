"""Restore a study's folder from its committed report (``longreach study restore``): every stage's store
(:mod:`longreach.report.restore`) and the ``train.json`` record of each trained model, so that ``study run`` goes on
with the stages still missing and ``study report`` merges old and new cells. Trained weights are not in a report:
a stage that still needs a trained model trains it again (:func:`~longreach.study.training.ensure_trained` sees the
record without its model folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from longreach.errors import LongreachError
from longreach.report.restore import read_report, restore_stores
from longreach.results import STORE_NAME
from longreach.study.training import RECORD, trained_dir
from longreach.train.loop import MODEL_DIR


def restore_study(report: Path, out: Path) -> list[Path]:
    """Write the stores of the study report ``report`` (a report.json or its folder) into ``out``, and its training
    records into ``out/train/NAME``; returns the files written, stores first."""
    document = read_report(report)
    if not document.get("study"):
        raise LongreachError(f"{report} is the report of a run, not of a study (it records no study)")
    training = document.get("training") or {}
    for name in training:  # refused before anything is written
        if (trained_dir(out, name) / RECORD).exists():
            raise LongreachError(f"{trained_dir(out, name) / RECORD} exists; restore into a new folder")
    written = [folder / STORE_NAME for folder in restore_stores(document, out, str(report))]
    for name, record in training.items():
        folder = trained_dir(out, name)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {**record["settings"], "out": str(folder)}
        restored = {**record, "settings": settings, "model_dir": str(folder / MODEL_DIR), "restored_from": str(report)}
        (folder / RECORD).write_text(json.dumps(restored, indent=1))
        written.append(folder / RECORD)
    return written
