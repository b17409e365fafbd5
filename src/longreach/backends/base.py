"""Backends run requests. Each is a typed spec registered in :data:`BACKENDS` (``hf``, ``openai:base_url=...``,
``kvpress:venv=DIR``), built by the one factory :func:`build_backend` that every executor uses, so a local run and
a Ray worker get the same backend doing the same checks.

A built backend answers ``generate(requests, stack)`` with generations and their costs, exposes the ``tokenizer``
that makes lengths exact, says what model it runs (``facts``) and, in ``prepare``, refuses what it cannot run at
all (a stack it cannot apply, a length beyond what the model can hold) and resolves ``auto`` stacks once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from longreach import params
from longreach.generation import Generation, Request
from longreach.methods import MethodStack
from longreach.registry import Registry


@dataclass(frozen=True)
class ModelSettings:
    """What model a backend runs and how: the ``--model``, ``--dtype``, ``--device`` and ``--reuse-prefix`` of a run."""

    model: str
    dtype: str = "bf16"
    device: str = "cpu"
    reuse_prefix: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Preparation:
    """What ``prepare`` settled: each stack's resolved form (``auto`` calibrated) and the calibrations made."""

    stacks: dict[str, MethodStack]
    calibration: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """A built backend."""

    tokenizer: Any
    concurrency: int  # requests worth having in flight at once (1 for a local model)

    def facts(self) -> dict[str, Any]:
        """The model this backend runs, for provenance: name, source, weights, native window, dtype, device."""
        ...

    def prepare(self, stacks: list[MethodStack], longest: dict[str, int], calibrated: dict[str, str]) -> Preparation:
        """Refuse (LongreachError, with the reason) what cannot run at all (``longest``: the longest length each
        stack reads, by spec); resolve ``auto`` stacks (those in ``calibrated``, spec -> resolved spec, were
        calibrated earlier in the run and keep that choice)."""
        ...

    def generate(self, requests: list[Request], stack: MethodStack) -> list[Generation]: ...


@dataclass(frozen=True)
class BackendSpec:
    """Base class of backend specs: the fields are the backend's typed options (from ``name:key=value``)."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def load_tokenizer(self, settings: ModelSettings) -> Any:
        """The tokenizer that counts prompt tokens as this backend's model does (cheap: no weights)."""
        raise NotImplementedError

    def build(self, settings: ModelSettings) -> Backend:
        """The backend, ready to run (loads the model where there is one)."""
        raise NotImplementedError

    @property
    def repr(self) -> str:
        """Canonical spec (only non-default options)."""
        return params.canonical(self.name, self)

    transport: ClassVar[tuple[str, ...]] = ()  # options that change how requests travel, not what they measure

    def identity(self) -> str:
        """The spec without its transport options: what a resumed run must keep."""
        return params.canonical(self.name, self, skip=self.transport)


BACKENDS: Registry[type[BackendSpec]] = Registry("backend", packages=("longreach.backends",))


register_backend = BACKENDS.by("name")  # class decorator: a backend spec registers itself under its name


def parse_backend(spec: str) -> BackendSpec:
    """``"openai:base_url=http://127.0.0.1:8000/v1:api=chat"`` -> a validated backend spec."""
    return params.from_spec(BACKENDS, spec)


def build_backend(spec: BackendSpec | str, settings: ModelSettings) -> Backend:
    """The one backend factory: every executor (local, Ray workers) builds its backend here."""
    parsed = parse_backend(spec) if isinstance(spec, str) else spec
    return parsed.build(settings)
