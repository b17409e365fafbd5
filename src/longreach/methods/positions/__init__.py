"""RoPE position methods, one file each (see :mod:`.base`)."""

from longreach.methods.positions.abf import Abf
from longreach.methods.positions.base import PositionMethod
from longreach.methods.positions.dynamic import Dynamic
from longreach.methods.positions.hf import HfRope
from longreach.methods.positions.linear import Linear
from longreach.methods.positions.llama3 import Llama3
from longreach.methods.positions.longrope import LongRope
from longreach.methods.positions.ntk import Ntk
from longreach.methods.positions.power import Power
from longreach.methods.positions.truncated import Truncated
from longreach.methods.positions.yarn import Yarn

POSITION_METHODS = (Linear, Ntk, Dynamic, Yarn, Llama3, LongRope, Abf, Truncated, Power, HfRope)

__all__ = ["POSITION_METHODS", "PositionMethod"]
