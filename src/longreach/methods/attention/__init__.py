"""Attention-level methods (change which keys each query sees and at what position)."""
