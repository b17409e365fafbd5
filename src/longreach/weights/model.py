"""Whole models in DFloat11 form: ``compress_model(MODEL, OUT)`` writes a folder that ``load_model`` reads.

The folder holds ``config.json``, the tokenizer files and ``model.df11`` (see :mod:`fileformat`): every
parameter and buffer of the bfloat16 model, tied weights once, non-persistent buffers (RoPE ``inv_freq``)
too, so the loaded model is the bfloat16 model bit for bit. Weights decompress on load (DFloat11 decodes per
transformer block just before use on GPUs; on a CPU that would re-decode every forward pass).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from longreach.errors import LongreachError
from longreach.models import ModelSource, adapter, load_model, quiet_transformers, register_source
from longreach.weights import codec, fileformat

WEIGHTS_FILE = "model.df11"
BUFFERS_KEY = "non_persistent_buffers"


@dataclass(frozen=True)
class CompressionSummary:
    """What ``compress_model`` wrote: tensor counts, bytes before and after, seconds taken."""

    out: Path
    tensors: int
    coded_tensors: int
    bf16_bytes: int
    file_bytes: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.file_bytes / self.bf16_bytes


def model_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict plus non-persistent buffers, names of those buffers): everything the forward pass reads."""
    tensors = dict(model.state_dict())
    extra = [name for name, _ in model.named_buffers() if name not in tensors]
    tensors.update({name: model.get_buffer(name) for name in extra})
    return tensors, extra


def stored_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (tied weights counted once)."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors.values()}.values())


def compress_model(
    name_or_path: str,
    out: Path,
    block_size: int = codec.DEFAULT_BLOCK_SIZE,
    max_code_length: int = codec.DEFAULT_MAX_CODE_LENGTH,
) -> CompressionSummary:
    """Load a model as bfloat16 and write its DFloat11 folder to ``out`` (created; must not hold a model)."""
    codec.check_params(block_size, max_code_length)
    _check_new_folder(Path(out))
    return write_compressed(load_model(name_or_path, "bf16"), Path(out), block_size, max_code_length)


def _check_new_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LongreachError(f"{out} exists and is not an empty folder; choose a new output folder")


def write_compressed(
    loaded: Any,
    out: Path,
    block_size: int = codec.DEFAULT_BLOCK_SIZE,
    max_code_length: int = codec.DEFAULT_MAX_CODE_LENGTH,
) -> CompressionSummary:
    """Write the DFloat11 folder of an already loaded bfloat16 ``LoadedModel``; ``seconds`` is this step."""
    _check_new_folder(out)
    start = time.perf_counter()
    tensors, extra = model_tensors(loaded.model)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.config.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    metadata = {"source_model": loaded.name, "source": loaded.source, BUFFERS_KEY: extra}
    header = fileformat.write(out / WEIGHTS_FILE, tensors, metadata, block_size, max_code_length)
    entries = [entry for name, entry in header.items() if name != "__metadata__" and "alias" not in entry]
    return CompressionSummary(
        out=out,
        tensors=len(tensors),
        coded_tensors=sum(entry["codec"] == "df11" for entry in entries),
        bf16_bytes=stored_bytes(tensors),
        file_bytes=(out / WEIGHTS_FILE).stat().st_size,
        seconds=time.perf_counter() - start,
    )


def load_compressed(folder: Path, dtype: torch.dtype) -> Any:
    """The model in a DFloat11 folder, decoded bit-exactly (then cast when ``dtype`` is not bfloat16)."""
    from transformers import AutoConfig

    file = fileformat.CompressedFile(folder / WEIGHTS_FILE)
    tensors = file.tensors()
    extra = file.metadata.get(BUFFERS_KEY, [])
    if not isinstance(extra, list) or not set(extra) <= set(tensors):
        raise LongreachError(f"{file.path}: metadata {BUFFERS_KEY} {extra!r} names tensors the file lacks")
    config = AutoConfig.from_pretrained(folder)
    state = {name: tensor for name, tensor in tensors.items() if name not in extra}
    model = adapter.causal_lm_from_state_dict(config, state, dtype)
    for name in extra:
        owner, _, attribute = name.rpartition(".")
        model.get_submodule(owner).register_buffer(attribute, tensors[name], persistent=False)
    return model


@register_source
@dataclass(frozen=True)
class DF11Source(ModelSource):
    """A folder written by ``longreach compress-weights``: config, tokenizer and ``model.df11`` (registered with
    the model sources through the ``longreach.model_sources`` entry point: models never import this package)."""

    kind: ClassVar[str] = "df11"
    priority: ClassVar[int] = 10  # the folder also holds a config.json

    def __post_init__(self) -> None:
        if not self.path or not self.recognises(Path(self.path).expanduser()):
            raise LongreachError(f"df11: {self.path!r} is not a folder holding {WEIGHTS_FILE}")

    @classmethod
    def recognises(cls, path: Path) -> bool:
        return path.is_dir() and (path / WEIGHTS_FILE).is_file()

    def weights_note(self, dtype: str) -> str:
        return f"DFloat11 folder {Path(self.path).name}, decoded losslessly to bf16" + (
            "" if dtype == "bf16" else f", then cast to {dtype}"
        )

    def load_tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        with quiet_transformers():
            return AutoTokenizer.from_pretrained(self.path)

    def load_weights(self, dtype: torch.dtype) -> Any:
        with quiet_transformers():
            try:
                return load_compressed(Path(self.path), dtype)
            except KeyError as exc:
                raise LongreachError(f"unsupported architecture in {self.path}: no causal LM for {exc}") from None
