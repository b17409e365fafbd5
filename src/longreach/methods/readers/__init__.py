"""Reader methods: own the loop over inputs longer than the model's window."""

from longreach.methods.readers.infiniretri import InfiniRetri

READER_METHODS = (InfiniRetri,)

__all__ = ["READER_METHODS"]
