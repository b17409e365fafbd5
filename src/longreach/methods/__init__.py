"""Everything that changes how a model reads long input, under one spec grammar (see :mod:`.spec`). Each method
is one file that registers itself; :data:`METHODS` discovers them on first use."""

from longreach.methods.base import Method
from longreach.methods.spec import METHODS, MethodStack, parse_method, parse_stack, register

__all__ = ["METHODS", "Method", "MethodStack", "parse_method", "parse_stack", "register"]
