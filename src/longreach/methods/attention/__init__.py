"""Attention-level methods (change which keys each query sees and at what position)."""

from longreach.methods.attention.moa import MoA
from longreach.methods.attention.selfextend import SelfExtend
from longreach.methods.attention.squeezed import Squeezed

ATTENTION_METHODS = (SelfExtend, MoA, Squeezed)

__all__ = ["ATTENTION_METHODS"]
