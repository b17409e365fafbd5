"""Typed parameters from spec strings: ``name:key=value:key=value`` -> a validated dataclass.

Both method specs (``yarn:factor=4``) and task specs (``needle:num_keys=4:haystack=prose``) use this
grammar. A bare value (``jsonl:data.jsonl``) sets the dataclass's first field. Each dataclass validates
its own values in ``__post_init__`` and raises :class:`LongreachError` with the bad value and what is valid.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

from longreach.errors import LongreachError
from longreach.registry import Registry, did_you_mean

D = TypeVar("D")


# A colon starts a new argument only where ``key=`` follows it, so values may hold colons themselves
# (``openai:base_url=http://127.0.0.1:8000/v1:api=chat``); the first argument may be a bare value.
_ARGUMENT_START = re.compile(r":(?=[A-Za-z_][A-Za-z0-9_]*=)")


def split_spec(spec: str) -> tuple[str, list[str]]:
    """``"yarn:factor=4:beta_fast=32"`` -> ``("yarn", ["factor=4", "beta_fast=32"])``; a colon inside a value
    (``base_url=http://host:8000/v1``) does not split."""
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise LongreachError(f"empty name in spec {spec!r}")
    if not rest:
        return name, []
    return name, _ARGUMENT_START.split(rest)


def from_spec(registry: Registry[type[D]], spec: str) -> D:
    """``"name:key=value"`` -> the class registered as ``name`` in ``registry``, built from the arguments."""
    name, args = split_spec(spec)
    return build(registry.get(name), name, args)


def parse_values(cls: type, name: str, args: list[str]) -> dict[str, Any]:
    """Spec arguments -> {field: typed value}; unknown or repeated keys raise with the valid names."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    by_name = {f.name: f for f in fields}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for position, arg in enumerate(args):
        if "=" in arg:
            key, raw = arg.split("=", 1)
        elif position == 0 and fields:
            key, raw = fields[0].name, arg
        else:
            raise LongreachError(f"{name}: expected key=value, got {arg!r}")
        if key not in by_name:
            valid = list(by_name) or ["(no parameters)"]
            raise LongreachError(f"{name}: unknown parameter {key!r}; {did_you_mean(key, valid)}")
        if key in values:
            raise LongreachError(f"{name}: parameter {key!r} given twice")
        values[key] = convert(raw, hints[key], f"{name}: {key}")
    return values


def build(cls: type[D], name: str, args: list[str], defaults: dict[str, Any] | None = None) -> D:
    """Instantiate dataclass ``cls`` from spec arguments on top of ``defaults`` (a variant's knobs)."""
    values = {**(defaults or {}), **parse_values(cls, name, args)}
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise LongreachError(f"{name}: missing required parameter {missing[0]!r} (e.g. {name}:{missing[0]}=VALUE)")
    return cls(**values)


def convert(raw: str, hint: Any, where: str) -> Any:
    """Convert a string to ``hint`` (int, float, bool, str, Literal, tuple[X, ...], X | None)."""
    origin = get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(hint) if a is not type(None)]
        if raw.lower() in ("none", "null") and len(options) < len(get_args(hint)):
            return None
        return convert(raw, options[0], where)
    if origin is Literal:
        choices = [str(c) for c in get_args(hint)]
        if raw not in choices:
            raise LongreachError(f"{where} must be one of {', '.join(choices)}; got {raw!r}")
        return get_args(hint)[choices.index(raw)]
    if origin is tuple:
        item = get_args(hint)[0]
        return tuple(convert(part, item, where) for part in raw.split("/") if part)
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise LongreachError(f"{where} must be true or false; got {raw!r}")
    if hint in (int, float):
        try:
            return hint(raw)
        except ValueError:
            raise LongreachError(
                f"{where} must be {'an integer' if hint is int else 'a number'}; got {raw!r}"
            ) from None
    return raw


def format_value(value: Any) -> str:
    """Canonical text of a parameter value (``4.0`` -> ``"4"``, tuples joined with ``/``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    if isinstance(value, tuple):
        return "/".join(format_value(v) for v in value)
    return str(value)


def canonical(name: str, obj: Any, defaults: dict[str, Any] | None = None, skip: tuple[str, ...] = ()) -> str:
    """``name`` plus ``:key=value`` for every field that differs from its default, in field order.

    ``defaults`` (a variant's knobs) override the dataclass defaults for this comparison; ``skip`` names fields
    left out.
    """
    parts = [name]
    for f in dataclasses.fields(obj):
        if not f.init or f.name in skip:
            continue
        value = getattr(obj, f.name)
        if defaults and f.name in defaults:
            default = defaults[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = f.default
        if value != default:
            parts.append(f"{f.name}={format_value(value)}")
    return ":".join(parts)


def describe_fields(cls: type) -> list[tuple[str, str, str]]:
    """(name, default, help) for each parameter, for ``longreach methods`` / ``longreach tasks``."""
    rows = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        rows.append((f.name, format_value(default), f.metadata.get("help", "")))
    return rows


def require(condition: bool, message: str) -> None:
    """Raise :class:`LongreachError` with ``message`` unless ``condition`` holds (validation helper)."""
    if not condition:
        raise LongreachError(message)
