"""Reader methods: own the loop over inputs longer than the model's window."""

from longreach.methods.readers.infiniretri import InfiniRetri
from longreach.methods.readers.landmark import Landmark
from longreach.methods.readers.longheads import LongHeads

READER_METHODS = (InfiniRetri, LongHeads, Landmark)

__all__ = ["READER_METHODS"]
