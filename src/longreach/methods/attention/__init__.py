"""Attention-level methods (change which keys each query sees and at what position)."""

from longreach.methods.attention.selfextend import SelfExtend

ATTENTION_METHODS = (SelfExtend,)

__all__ = ["ATTENTION_METHODS"]
