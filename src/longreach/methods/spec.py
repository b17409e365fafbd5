"""Parse method specs: ``"yarn:factor=4+snapkv:compression_ratio=0.5"`` -> a validated :class:`MethodStack`.

Grammar: methods joined by ``+``; each is ``name`` followed by ``:key=value`` parameters (a bare first
value sets the method's first parameter). The canonical repr lists only non-default parameters, so
equal stacks have equal reprs and land in the same results cells.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from longreach import params
from longreach.errors import LongreachError
from longreach.methods.base import KIND_ORDER, Method
from longreach.registry import Registry

if TYPE_CHECKING:
    from longreach.models import LoadedModel

METHODS: Registry[type[Method]] = Registry("method", packages=("longreach.methods",))


register = METHODS.by("name")  # class decorator: a method registers itself under its name where it is defined


@dataclass(frozen=True)
class MethodStack:
    """An ordered, validated set of methods: at most one per kind, applied positions-first."""

    methods: tuple[Method, ...] = ()

    def __post_init__(self) -> None:
        kinds = [m.kind for m in self.methods]
        for kind in set(kinds):
            if kinds.count(kind) > 1:
                names = " and ".join(m.name for m in self.methods if m.kind == kind)
                raise LongreachError(f"a stack holds at most one {kind} method; got {names}")
        for first in self.methods:
            for second in self.methods:
                reason = first.conflict_with(second) if first is not second else None
                if reason:
                    raise LongreachError(f"{first.name} cannot be stacked with {second.name}: {reason}")

    @property
    def repr(self) -> str:
        """Canonical spec string; ``"none"`` for the empty stack."""
        if not self.methods:
            return "none"
        return "+".join(params.canonical(m.name, m) for m in self.methods)

    def of_kind(self, kind: str) -> Method | None:
        return next((m for m in self.methods if m.kind == kind), None)

    def without(self, kind: str) -> MethodStack:
        """The stack minus its method of ``kind`` (a reader runs the rest inside its loop)."""
        return MethodStack(tuple(m for m in self.methods if m.kind != kind))

    @property
    def reads_length(self) -> bool:
        """Whether any method's computation depends on the total length read (see :class:`Method`)."""
        return any(m.reads_length for m in self.methods)

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        """Apply every method (in kind order) for the duration of the block; undo all on exit."""
        with contextlib.ExitStack() as stack:
            for method in self.methods:
                stack.enter_context(method.applied(loaded))
            yield


def parse_method(text: str) -> Method:
    """One ``name:key=value`` item -> a validated Method instance."""
    return params.from_spec(METHODS, text)


def parse_stack(spec: str) -> MethodStack:
    """A full spec (``"a:x=1+b"``) -> :class:`MethodStack`. ``"none"`` is the empty stack."""
    items = [part for part in spec.split("+")]
    if any(not part.strip() for part in items):
        raise LongreachError(f"empty method in spec {spec!r}; join methods with a single '+'")
    methods = [parse_method(item) for item in items]
    if any(m.kind == "none" for m in methods):
        if len(methods) > 1:
            raise LongreachError(f"'none' stands alone; drop it from {spec!r}")
        return MethodStack(())
    methods.sort(key=lambda m: KIND_ORDER.index(m.kind))
    return MethodStack(tuple(methods))
