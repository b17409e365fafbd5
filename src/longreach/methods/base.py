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

# The order in which a stack applies its methods: positions first (they define what attention sees),
# the reader last (it owns the loop over the input and calls everything else).
KIND_ORDER: tuple[Kind, ...] = ("none", "position", "attention", "cache", "reader")


@dataclass(frozen=True)
class Method:
    """Base class. Subclasses are frozen dataclasses whose fields are the method's parameters.

    Class attributes a subclass sets: ``name`` (registry name), ``kind``, ``summary`` (one line for
    ``longreach methods``), ``paper`` (citation), ``example`` (a spec that engages the method on tiny-llama) and
    the capability ``reads_length``: the method's computation depends on the total length of the sequence
    read (dynamic NTK's base, SelfExtend's group size, MoA's windows), so the engine continues a kept cache
    only into a read of the same length. Validation goes in ``__post_init__`` and raises
    :class:`longreach.errors.LongreachError`. A method registers itself with :func:`longreach.methods.spec.register`.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[Kind] = "none"
    summary: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    example: ClassVar[str] = ""  # a spec that engages the method on tiny-llama (default: the bare name)
    reads_length: ClassVar[bool] = False

    def conflict_with(self, other: Method) -> str | None:
        """Why this method cannot run together with ``other`` in one stack, or None when it can."""
        return None

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        """Patch ``loaded.model`` for the duration of the block; the default changes nothing."""
        yield
