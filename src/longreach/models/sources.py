"""Model sources: where a model's files are and how its tokenizer and weights load (never from a hub).

A source is a typed spec (``gguf:path=model.gguf``, ``hf_dir:path=DIR``, ``tiny``) registered in :data:`SOURCES`.
:func:`resolve` also takes a zoo name or a plain path, which the registered kinds recognise (the highest
``priority`` first: a DFloat11 folder, registered by :mod:`longreach.weights`, also holds a config.json).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from longreach import params
from longreach.errors import LongreachError
from longreach.registry import Registry

SOURCES: Registry[type[ModelSource]] = Registry(
    "model source", packages=("longreach.models",), entry_points="longreach.model_sources"
)


def cache_dir() -> Path:
    """``$LONGREACH_CACHE``, else ``$XDG_CACHE_HOME/longreach``, else ``~/.cache/longreach``."""
    if os.environ.get("LONGREACH_CACHE"):
        return Path(os.environ["LONGREACH_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longreach"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
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


WEIGHTS_NOTE = "longreach_weights.txt"  # in a model folder: what its weights are, in words (``longreach train``)


@dataclass(frozen=True)
class ModelSource:
    """Base class: a kind of model files. Subclasses register themselves (``@register_source``)."""

    path: str = field(default="", metadata={"help": "the model's file or folder"})

    kind: ClassVar[str] = ""
    priority: ClassVar[int] = 0  # recognising a plain path: higher kinds are asked first

    @classmethod
    def recognises(cls, path: Path) -> bool:
        """True when ``path`` is a model of this kind."""
        return False

    def describe(self) -> str:
        return self.path or "built in memory"

    def weights_note(self, dtype: str) -> str:
        """What the loaded weights are, said honestly (e.g. a quantized file dequantized to ``dtype``)."""
        return f"{Path(self.path).name or self.kind} in {dtype}"

    def load_tokenizer(self) -> Any:
        raise NotImplementedError

    def load_weights(self, dtype: torch.dtype) -> Any:
        raise NotImplementedError


register_source = SOURCES.by("kind")  # class decorator: a source kind registers itself under its kind


def parse_source(spec: str) -> ModelSource:
    """``gguf:path=FILE`` -> a validated source (the path must exist and be of that kind)."""
    return params.from_spec(SOURCES, spec)


def recognise(path: Path) -> ModelSource:
    """The source of a plain path, asking every registered kind (highest priority first)."""
    if not path.exists():
        raise LongreachError(f"no such model file or folder: {path}")
    for _, cls in sorted(SOURCES.items(), key=lambda item: -item[1].priority):
        if cls.recognises(path):
            return cls(str(path.resolve()))
    if path.is_file():
        raise LongreachError(f"{path} is a file but not a .gguf; give a .gguf file or a model directory")
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return GGUFSource(str(ggufs[0].resolve()))
    raise LongreachError(
        f"{path} is not a model directory: it has no config.json"
        + (f" and {len(ggufs)} .gguf files (name one)" if ggufs else "")
    )


def _unsupported(path: str, exc: Exception) -> LongreachError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return LongreachError(
        f"unsupported architecture in {path}: {first}. longreach needs a causal language model "
        "that transformers' AutoModelForCausalLM can load (Llama, Gemma, Qwen, Mistral, ...)"
    )


def _auto_weights(folder: Path, dtype: torch.dtype, **kwargs: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(folder, **kwargs)
            return AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=dtype, **kwargs).eval()
        except OSError as exc:
            raise LongreachError(f"cannot load weights from {folder}: {str(exc).splitlines()[0]}") from None
        except (ValueError, KeyError) as exc:
            raise _unsupported(str(folder), exc) from None


def _checked_path(source: ModelSource) -> Path:
    path = Path(source.path).expanduser()
    if not source.path or not type(source).recognises(path):
        raise LongreachError(f"{source.kind}: {source.path!r} is not a {source.kind} model")
    return path


@register_source
@dataclass(frozen=True)
class HFDirSource(ModelSource):
    """A Hugging Face model folder (config.json, weights, tokenizer). A folder ``longreach train`` wrote carries the
    note of the weights it started from (``WEIGHTS_NOTE``), so a result read from it still says what they are."""

    kind: ClassVar[str] = "hf_dir"

    def __post_init__(self) -> None:
        _checked_path(self)

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return path.is_dir() and (path / "config.json").is_file()

    def weights_note(self, dtype: str) -> str:
        note = Path(self.path) / WEIGHTS_NOTE
        if note.is_file():
            return f"{note.read_text().strip()}; read in {dtype}"
        return super().weights_note(dtype)

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        with quiet_transformers():
            try:
                return AutoTokenizer.from_pretrained(self.path)
            except (OSError, ValueError) as exc:
                raise LongreachError(f"cannot load a tokenizer from {self.path}: {str(exc).splitlines()[0]}") from None

    def load_weights(self, dtype: torch.dtype) -> Any:
        return _auto_weights(Path(self.path), dtype)


@register_source
@dataclass(frozen=True)
class GGUFSource(ModelSource):
    """A GGUF file (llama.cpp's format): transformers dequantizes its weights on load."""

    kind: ClassVar[str] = "gguf"

    def __post_init__(self) -> None:
        _checked_path(self)

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return path.is_file() and path.suffix == ".gguf"

    def weights_note(self, dtype: str) -> str:
        return f"{Path(self.path).name} dequantized to {dtype}"

    def load_tokenizer(self) -> Any:
        """The tokenizer inside the GGUF file, built once (seconds) and then read from the cache (fast)."""
        from transformers import AutoTokenizer

        file = Path(self.path)
        stat = file.stat()
        key = hashlib.sha256(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        cached = cache_dir() / "tokenizers" / key
        with quiet_transformers():
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

    def load_weights(self, dtype: torch.dtype) -> Any:
        return _auto_weights(Path(self.path).parent, dtype, gguf_file=Path(self.path).name)


@register_source
@dataclass(frozen=True)
class TinySource(ModelSource):
    """The random 2-layer Llama and its BPE tokenizer, built in memory (tests)."""

    kind: ClassVar[str] = "tiny"

    def weights_note(self, dtype: str) -> str:
        return f"random weights (seed 0) in {dtype}"

    def load_tokenizer(self) -> Any:
        from longreach.models.tiny import tiny_tokenizer

        return tiny_tokenizer()

    def load_weights(self, dtype: torch.dtype) -> Any:
        from longreach.models.tiny import tiny_llama

        return tiny_llama(dtype)
