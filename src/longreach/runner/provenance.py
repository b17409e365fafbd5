"""Where a result came from: package and library versions, git sha, machine, model and seed."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

import longreach


def git_sha() -> str | None:
    """The commit of the longreach checkout in use (with ``-dirty`` when it has local changes), if any; outside a
    git checkout, ``$LONGREACH_GIT_SHA``."""
    source = Path(longreach.__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # not a git checkout (a copied tree): the sha it was copied at
        return os.environ.get("LONGREACH_GIT_SHA")
    return sha + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Versions and machine facts (no model): for benchmark reports as well as eval runs."""
    import torch
    import transformers

    return {
        "longreach_version": longreach.__version__,
        "git_sha": git_sha(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM",
        "torch_threads": torch.get_num_threads(),
        "created_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def provenance(model: str, model_source: str, native_context_length: int, dtype: str, seed: int) -> dict[str, Any]:
    """The ``provenance`` block of report.json."""
    return {
        **environment(),
        "model": model,
        "model_source": model_source,
        "native_context_length": native_context_length,
        "dtype": dtype,
        "seed": seed,
    }
