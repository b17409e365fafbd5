"""The Method abstraction: one dataclass per method, validated on construction, applied as a context manager.

A method declares what it changes (``kind``) so a stack can hold at most one of each kind and refuse
incompatible pairs with a reason. ``applied(loaded)`` patches the model through
:mod:`longreach.models.adapter` and restores everything on exit, including when the body raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from longreach.models import LoadedModel

Kind = Literal["none", "position", "attention", "cache", "reader"]
Phase = Literal["prefill", "decode", "both"]

# The order in which a stack applies its methods: positions first (they define what attention sees),
# the reader last (it owns the loop over the input and calls everything else).
KIND_ORDER: tuple[Kind, ...] = ("none", "position", "attention", "cache", "reader")


@dataclass(frozen=True)
class Method:
    """Base class. Subclasses are frozen dataclasses whose fields are the method's parameters.

    Class attributes a subclass sets: ``name`` (registry name), ``kind``, ``summary`` (one line for
    ``longreach methods``), ``paper`` (citation), ``needs_attention_probs`` and ``phase``.
    Validation goes in ``__post_init__`` and raises :class:`longreach.errors.LongreachError`.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "none"
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    example: ClassVar[str] = ""  # a spec that runs on tiny-llama, when the bare name needs parameters
    needs_attention_probs: ClassVar[bool] = False
    phase: ClassVar[Phase] = "both"

    def conflict_with(self, other: Method) -> str | None:
        """Why this method cannot run together with ``other`` in one stack, or None when it can."""
        return None

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        """Patch ``loaded.model`` for the duration of the block; the default changes nothing."""
        yield
