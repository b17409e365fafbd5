"""Where a result came from: the code (package version, git commit, a hash of the source actually run), the
environment (library versions, machine, CPU flags) and, added by the runner, the run's settings and model facts.

Every cell references the provenance it ran under, so a resumed run that mixes code versions shows the mix.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

import longreach
from longreach.models.cpu import cpuinfo_field

_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "fma", "f16c")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


@functools.cache
def code_version() -> dict[str, Any]:
    """``version``, ``git_sha`` (the commit, ``-dirty`` with local changes; ``$LONGREACH_GIT_SHA`` outside a
    checkout) and ``source_hash``: a hash of every file of the package as it is on disk, so uncommitted changes
    count. Computed once per process (the code cannot change under a running process)."""
    package = Path(longreach.__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*")):
        if file.is_file() and "__pycache__" not in file.parts and file.suffix not in (".pyc",):
            digest.update(str(file.relative_to(package)).encode() + b"\0" + file.read_bytes() + b"\0")
    sha = _git(["rev-parse", "HEAD"], package)
    if sha is not None:
        dirty = _git(["status", "--porcelain", "--untracked-files=normal", "--", "."], package)
        sha += "-dirty" if dirty else ""
    return {
        "longreach_version": longreach.__version__,
        "git_sha": sha or os.environ.get("LONGREACH_GIT_SHA"),
        "source_hash": digest.hexdigest()[:16],
    }


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (``AMD EPYC``, ``Intel(R) Xeon(R) Platinum 8488C``) from ``cpuinfo``; elsewhere what
    ``platform`` knows. Machines of one class differ up to 3x in speed (27x for bf16 training without AVX-512), so
    reports name it."""
    return cpuinfo_field("model name", cpuinfo) or platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The CPU's vector-extension flags that change how kernels run (from /proc/cpuinfo), comma-separated."""
    flags = cpuinfo_field("flags")
    if flags is None:
        return "unknown"
    present = flags.split()
    return ",".join(flag for flag in _CPU_FLAGS if flag in present) or "none of " + "/".join(_CPU_FLAGS)


def environment() -> dict[str, Any]:
    """Library versions and machine facts (no model): for benchmark reports as well as runs."""
    import torch
    import transformers

    return {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python_version": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpus, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM",
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
    }


def current() -> dict[str, Any]:
    """The code and environment this process runs with, time-stamped: what every report's provenance starts from
    (runs add their settings and model; micro-benchmarks record it as is)."""
    return {**code_version(), **environment(), "created_at": now()}


def fingerprint(provenance: dict[str, Any]) -> str:
    """A stable hash of a provenance record without its time stamp (cells with equal fingerprints share one)."""
    stable = {key: value for key, value in provenance.items() if key != "created_at"}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
