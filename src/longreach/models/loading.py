"""Resolve a model name, path or source spec to its files, then load model + tokenizer (never from a hub)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from longreach.errors import LongreachError
from longreach.models import adapter
from longreach.models.cpu import warn_if_slow_bf16
from longreach.models.sources import SOURCES, ModelSource, parse_source, recognise
from longreach.models.zoo import ZOO

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}


@dataclass
class LoadedModel:
    """A model ready to run, with the facts the runner and the report need. ``weights`` says what the loaded
    weights are (e.g. "SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to bf16")."""

    name: str
    model: Any
    tokenizer: Any
    native_context_length: int
    dtype: str
    source: str
    hard_max_length: int | None
    kv_bytes_per_token: int
    device: str = "cpu"
    weights: str = ""


def resolve(name_or_path: str) -> ModelSource:
    """A zoo name, a source spec (``gguf:path=FILE``) or a path (HF folder, .gguf file, DFloat11 folder)."""
    if name_or_path in ZOO:
        return ZOO[name_or_path].locate()
    kind = name_or_path.split(":", 1)[0]
    if ":" in name_or_path and kind in SOURCES:
        return parse_source(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise LongreachError(
            f"unknown model {name_or_path!r}: not a zoo name ({', '.join(ZOO)}), a source spec "
            f"({', '.join(f'{k}:path=...' for k in SOURCES.names())}) nor an existing path"
        )
    return recognise(path)


def load_tokenizer(source: ModelSource) -> Any:
    """Just the tokenizer (cheap), so lengths can be checked before the weights are loaded."""
    return source.load_tokenizer()


def weights_note(name_or_path: str, source: ModelSource, dtype: str) -> str:
    """The loaded weights, said honestly: the zoo's description or the source's own."""
    entry = ZOO.get(name_or_path)
    return entry.weights.format(dtype=dtype) if entry and entry.weights else source.weights_note(dtype)


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
    """Load a model by zoo name, source spec or local path. ``dtype`` is one of bf16, fp32, fp16; ``device`` is
    ``cpu`` or ``cuda[:N]`` (weights are loaded on the CPU, then moved)."""
    if dtype not in DTYPES:
        raise LongreachError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    check_device(device)
    warn_if_slow_bf16(dtype, device)
    source = resolve(name_or_path)
    tokenizer = source.load_tokenizer()
    model = source.load_weights(DTYPES[dtype]).to(device)
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
        weights=weights_note(name_or_path, source, dtype),
    )
