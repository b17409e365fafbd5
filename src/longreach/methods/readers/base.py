"""Reader methods own the loop over the input: they decide what the model reads, chunk by chunk, and call
the backend's ``complete`` for the answer. The rest of the stack (position, attention methods) is applied
inside every forward the reader makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from longreach.methods.base import Kind, Method

if TYPE_CHECKING:
    from longreach.backends.base import Generation, Request
    from longreach.backends.hf import HFBackend
    from longreach.methods.spec import MethodStack


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

    def read(self, backend: HFBackend, request: Request, inner: MethodStack) -> Generation:
        """Answer ``request`` (whose ``question_offset`` splits context and question) under ``inner``."""
        raise NotImplementedError
