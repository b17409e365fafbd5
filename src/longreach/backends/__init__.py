"""Backends run requests: ``hf`` (local transformers, applies methods)."""

from longreach.backends.base import Backend, Generation, Request
from longreach.backends.hf import HFBackend

__all__ = ["Backend", "Generation", "HFBackend", "Request"]
