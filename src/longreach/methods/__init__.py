"""Everything that changes how a model reads long input, under one spec grammar (see :mod:`.spec`)."""

from longreach.methods.attention import ATTENTION_METHODS
from longreach.methods.base import Method
from longreach.methods.cache import CACHE_METHODS
from longreach.methods.none import NoMethod
from longreach.methods.positions import POSITION_METHODS
from longreach.methods.readers import READER_METHODS
from longreach.methods.spec import METHODS, MethodStack, parse_method, parse_stack

for _method in (NoMethod, *POSITION_METHODS, *ATTENTION_METHODS, *CACHE_METHODS, *READER_METHODS):
    METHODS.add(_method.name, _method)

from longreach.methods.auto import Auto  # noqa: E402  (auto parses specs of the methods above)

METHODS.add(Auto.name, Auto)

__all__ = ["METHODS", "Method", "MethodStack", "parse_method", "parse_stack"]
