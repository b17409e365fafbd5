"""A named registry: the single list of methods, tasks, backends, executors and model sources that the CLI, docs and
tests read.

A thing registers itself where it is defined (``@METHODS.register("yarn")``). A registry discovers its members on
first use by importing every module of the packages it names (modules whose name starts with ``_`` are skipped),
and the modules other installed packages declare under its entry-point group: adding a method, task family,
backend or executor is one new file, and a lower layer never imports the higher one that plugs into it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import pkgutil
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


def import_package_modules(package: str) -> None:
    """Import ``package`` and every public module below it (recursively), so their registrations run."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(getattr(root, "__path__", []), prefix=package + "."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)


class Registry(Generic[T]):
    """Maps names to objects. ``get`` on an unknown name raises with a "did you mean" hint.

    ``packages``: packages whose modules register members (imported on first use); ``entry_points``: an
    entry-point group whose modules do (plugins, e.g. the DFloat11 model source of :mod:`longreach.weights`).
    """

    def __init__(self, kind: str, packages: tuple[str, ...] = (), entry_points: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._packages, self._group = packages, entry_points
        self._discovered = not packages and entry_points is None

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True  # set first: the imports below register into this registry
        for package in self._packages:
            import_package_modules(package)
        if self._group is not None:
            for entry in importlib.metadata.entry_points(group=self._group):
                importlib.import_module(entry.value.split(":")[0])

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

    def by(self, attribute: str) -> Callable[[T], T]:
        """A class decorator registering a class under the value of its ``attribute`` (``name``, ``kind``)."""
        return lambda cls: self.add(getattr(cls, attribute), cls)

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._items:
            raise LongreachError(f"unknown {self.kind} {name!r}: {did_you_mean(name, self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        self._discover()
        return list(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        self._discover()
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items
