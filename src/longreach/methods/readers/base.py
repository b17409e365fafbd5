"""Reader methods own the loop over the input: they decide what the model reads, chunk by chunk, and ask the
engine for the answer. The rest of the stack (position, attention methods) is applied inside every forward the
reader makes. Readers are engine clients: the engine hands itself to :meth:`ReaderMethod.read` as a
:class:`ReadingEngine` (this layer never imports the engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from longreach.generation import Generation, Request
from longreach.methods.base import Kind, Method

if TYPE_CHECKING:
    from longreach.methods.spec import MethodStack
    from longreach.models import LoadedModel


class ReadingEngine(Protocol):
    """What a reader uses of the engine: the model, its tokenizer, and the final prefill + decode."""

    loaded: LoadedModel
    tokenizer: Any

    def encode(self, text: str) -> list[int]: ...

    def complete(
        self, prompt_ids: list[int], request: Request, stack: MethodStack, reused: int = 0, cache: Any = None
    ) -> tuple[Generation, Any]: ...


@dataclass(frozen=True)
class ReaderMethod(Method):
    kind: ClassVar[Kind] = "reader"
    bounded_memory: ClassVar[bool] = False  # True: memory and positions stay bounded at any input length

    def conflict_with(self, other: Method) -> str | None:
        if other.kind == "cache":
            return (
                "a reader decides itself what its cache keeps; cache methods compress a single read of the "
                "prompt and do not run inside a reader's chunks"
            )
        return None

    def read(self, engine: ReadingEngine, request: Request, inner: MethodStack) -> Generation:
        """Answer ``request`` (whose ``question_offset`` splits context and question) under ``inner``."""
        raise NotImplementedError
