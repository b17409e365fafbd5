"""A named registry: the single list of methods, tasks and models that the CLI, docs and tests read."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from longreach.errors import LongreachError

T = TypeVar("T")


def did_you_mean(name: str, valid: list[str]) -> str:
    """A short hint naming the closest valid names, or all of them when none is close."""
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "valid: " + ", ".join(valid)


class Registry(Generic[T]):
    """Maps names to objects. ``get`` on an unknown name raises with a "did you mean" hint."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``. Names are unique."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            raise LongreachError(f"unknown {self.kind} {name!r}: {did_you_mean(name, self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items
