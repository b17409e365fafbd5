"""Build kvpress's own virtual environment (kvpress 0.5.5 needs transformers < 5.3; longreach needs 5.24).

``ensure_venv()`` creates ``benchmarks/.kvpress-venv`` (git-ignored) once and returns its python. Order matters:
torch is pinned and installed first (an unpinned resolve pulls a multi-GB CUDA build), then transformers 5.2.0,
kvpress without its declared dependencies (they would pull more than it needs), then what it imports
(cachetools < 6, datasets, fire < 0.7) and what loading a GGUF needs (gguf, accelerate).
Run as a script to build it: ``python benchmarks/kvpress_env.py``.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

VENV = Path(__file__).resolve().parent / ".kvpress-venv"
STEPS = (
    ["torch==2.13.0"],
    ["transformers==5.2.0"],
    ["--no-deps", "kvpress==0.5.5"],
    ["cachetools<6", "datasets", "fire<0.7", "gguf", "accelerate"],
)


def ensure_venv(path: Path = VENV) -> Path:
    """The kvpress venv's python, building the venv first when it is missing or incomplete."""
    python = path / "bin" / "python"
    stamp = path / ".complete"
    if stamp.is_file():
        return python
    venv.create(path, with_pip=True, clear=path.exists())
    for args in STEPS:
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args], check=True
        )
    subprocess.run([str(python), "-c", "import kvpress, transformers; print(transformers.__version__)"], check=True)
    stamp.write_text("\n".join(" ".join(step) for step in STEPS) + "\n")
    return python


if __name__ == "__main__":
    print(ensure_venv(Path(sys.argv[1]) if len(sys.argv) > 1 else VENV))
