"""Backends run requests: a registry of typed specs (``hf``, ``openai``, ``kvpress``) and the one factory."""

from longreach.backends.base import (
    BACKENDS,
    Backend,
    BackendSpec,
    ModelSettings,
    Preparation,
    build_backend,
    parse_backend,
    register_backend,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "ModelSettings",
    "Preparation",
    "build_backend",
    "parse_backend",
    "register_backend",
]
