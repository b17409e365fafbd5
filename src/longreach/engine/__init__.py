"""The engine: a loaded model under method stacks (prefill, compressed reads, decode, one prefix cache,
measurement). Backends are thin adapters over it; readers are its clients."""

from longreach.engine.engine import SPEEDUPS, Engine, PromptRead, question_split
from longreach.engine.prefix import PrefixCache

__all__ = ["SPEEDUPS", "Engine", "PrefixCache", "PromptRead", "question_split"]
