"""Everything that changes how a model reads long input, under one spec grammar (see :mod:`.spec`)."""

from longreach.methods.base import Method
from longreach.methods.none import NoMethod
from longreach.methods.spec import METHODS, MethodStack, parse_method, parse_stack

METHODS.add(NoMethod.name, NoMethod)

__all__ = ["METHODS", "Method", "MethodStack", "parse_method", "parse_stack"]
