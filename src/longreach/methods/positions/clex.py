"""``clex``: RoPE frequencies from a neural ODE learned in fine-tuning (Chen et al., ICLR 2024, CLEX,
arXiv 2310.16450); the ``clex`` training recipe learns the ODE, this method reads with it.

Notation (methods.md 0.1 and 14): d rotary dims, i = 0 .. d/2-1, base b, native window L, scale t >= 1,
h = param_factor * d hidden units.
```
xi_t   = (b * alpha^(d/(d-2)))^(-2i/d),  alpha = 2t - 1          NTK frequencies for scale t    (d/2,)
z(t)   = log theta(t)                                             log inverse frequencies        (d/2,)
dz/dt  = act((z + log xi_t) @ W_up) @ W_down + d/dt log xi_t      W_up (d/2, h), W_down (h, d/2)
z(1)   = log theta = log b^(-2i/d)
```
W_down starts at zero, so the untrained ODE gives z(t) = log xi_t: NTK scaling with alpha = 2t - 1.
The ODE is solved with RK4 at step 0.01 (torchdiffeq ``odeint``). Reading l tokens uses t = l / L clamped
to [1, max_factor]; the released code rounds t up to an integer (``rounding=ceil``), the default keeps it
continuous. Inside the window (t = 1) the frequencies are the model's own. The learned parameters live in
``clex.safetensors`` (W_up, W_down; base, d, L, act, max_factor, step in its metadata), written next to the
trained model by the recipe and found there by this method.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from longreach.errors import LongreachError
from longreach.methods.base import Method
from longreach.methods.positions.base import PositionMethod, base_inv_freq, rotary_dim
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel

FILE_NAME = "clex.safetensors"
ACTIVATIONS = {"tanh": torch.tanh, "silu": torch.nn.functional.silu}


class ClexOde(torch.nn.Module):
    """The CLEX ODE for one rotary basis: parameters ``up`` (d/2, h) and ``down`` (h, d/2), float32."""

    def __init__(
        self,
        dim: int,
        base: float,
        native: int,
        *,
        param_factor: int = 1,
        act: str = "tanh",
        max_factor: float = 16.0,
        step: float = 0.01,
    ) -> None:
        super().__init__()
        if act not in ACTIVATIONS:
            raise LongreachError(f"clex: act must be one of {', '.join(ACTIVATIONS)}; got {act!r}")
        self.dim, self.base, self.native, self.act = dim, float(base), int(native), act
        self.max_factor, self.step = float(max_factor), float(step)
        self.up = torch.nn.Parameter(torch.empty(dim // 2, param_factor * dim, dtype=torch.float32))
        self.down = torch.nn.Parameter(torch.zeros(param_factor * dim, dim // 2, dtype=torch.float32))
        torch.nn.init.kaiming_uniform_(self.up, a=math.sqrt(5))

    def _apply(self, fn: Any, recurse: bool = True) -> ClexOde:
        """Casts of a model holding the ODE move it, never round it: it stays float32 (like RoPE frequencies)."""
        device = fn(torch.zeros((), dtype=torch.float32, device=self.up.device)).device
        return super()._apply(lambda tensor: tensor.to(device=device), recurse)

    def log_ntk(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log xi_t, d/dt log xi_t), each (d/2,), for alpha = 2t - 1."""
        pair = torch.arange(0, self.dim, 2, dtype=torch.float32, device=self.up.device)  # 2i
        alpha = 2 * t.float() - 1
        log_xi = -(pair / self.dim) * math.log(self.base) - (pair / (self.dim - 2)) * torch.log(alpha)
        return log_xi, -(pair / (self.dim - 2)) * 2 / alpha

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """dz/dt at scale t for log frequencies z (d/2,)."""
        log_xi, dlog_xi = self.log_ntk(t)
        return ACTIVATIONS[self.act]((z + log_xi) @ self.up) @ self.down + dlog_xi

    def inv_freq(self, t: float) -> torch.Tensor:
        """theta(t) = exp z(t), (d/2,) float32; differentiable in ``up`` and ``down``. t <= 1 gives theta."""
        from torchdiffeq import odeint

        theta = base_inv_freq(self.base, self.dim, self.up.device)
        if t <= 1.0:
            return theta
        grid = torch.tensor([1.0, float(t)], dtype=torch.float32, device=self.up.device)
        solution = odeint(self, theta.log(), grid, method="rk4", options={"step_size": self.step})
        return solution[-1].exp()

    def scale(self, length: int, rounding: str = "none") -> float:
        """t for reading ``length`` tokens: length / L, rounded up when ``rounding == 'ceil'``, in [1, max]."""
        t = length / self.native
        if rounding == "ceil":
            t = math.ceil(t)
        return min(max(t, 1.0), self.max_factor)

    def metadata(self) -> dict[str, str]:
        return {
            "dim": str(self.dim),
            "base": repr(self.base),
            "native": str(self.native),
            "act": self.act,
            "max_factor": repr(self.max_factor),
            "step": repr(self.step),
        }

    def save(self, path: Path) -> None:
        """Write ``up`` and ``down`` with the ODE's settings as safetensors metadata."""
        from safetensors.torch import save_file

        tensors = {"up": self.up.detach().float().cpu().contiguous(), "down": self.down.detach().float().cpu()}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=self.metadata())

    @classmethod
    def load(cls, path: Path) -> ClexOde:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as file:
                meta = file.metadata() or {}
                up, down = file.get_tensor("up"), file.get_tensor("down")
            ode = cls(
                int(meta["dim"]),
                float(meta["base"]),
                int(meta["native"]),
                param_factor=up.shape[1] // int(meta["dim"]),
                act=meta["act"],
                max_factor=float(meta["max_factor"]),
                step=float(meta["step"]),
            )
        except (OSError, KeyError, ValueError) as exc:
            raise LongreachError(f"clex: {path} is not a CLEX parameter file ({exc})") from None
        with torch.no_grad():
            ode.up.copy_(up)
            ode.down.copy_(down)
        return ode


def model_folder(loaded: LoadedModel) -> Path | None:
    """The folder the model was loaded from, when it was loaded from one."""
    for candidate in (loaded.name, getattr(loaded.model.config, "_name_or_path", "")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@register
@dataclass(frozen=True)
class Clex(PositionMethod):
    """Frequencies from the CLEX ODE in ``path`` (default: ``clex.safetensors`` in the model's folder)."""

    path: str = field(default="", metadata={"help": "CLEX parameter file (default: clex.safetensors by the model)"})
    untrained: bool = field(default=False, metadata={"help": "use the ODE at initialisation (NTK, alpha=2t-1)"})
    max_factor: float = field(default=0.0, metadata={"help": "largest scale t (0: the file's; 16 untrained)"})
    rounding: Literal["none", "ceil"] = field(default="none", metadata={"help": "t = l/L as is, or rounded up"})

    name: ClassVar[str] = "clex"
    reads_length: ClassVar[bool] = True
    summary: ClassVar[str] = "CLEX: per-frequency scaling from a learned neural ODE, following the length read"
    paper: ClassVar[str] = "Chen et al. 2024, CLEX (ICLR)"
    example: ClassVar[str] = "clex:untrained=true"

    def __post_init__(self) -> None:
        require(self.max_factor == 0 or self.max_factor >= 1, f"clex: max_factor must be >= 1; got {self.max_factor:g}")
        require(not (self.path and self.untrained), "clex: give either path=FILE or untrained=true, not both")

    def conflict_with(self, other: Method) -> str | None:
        if other.name == "selfextend":
            return (
                "its grouped positions stay inside the native window, so a length-driven rescaling would "
                "rescale positions that need none; use a static one (linear, ntk, yarn, abf) or none"
            )
        return super().conflict_with(other)

    def ode(self, loaded: LoadedModel) -> ClexOde:
        """The ODE this method reads with: loaded from its file, or at initialisation when ``untrained``."""
        config = adapter.text_config(loaded.model.config)
        layer_type = adapter.long_range_layer_types(loaded.model.config)[0]
        params = adapter.rope_parameters(config, layer_type)
        dim = rotary_dim(config, params)
        if self.untrained:
            with torch.random.fork_rng():
                torch.manual_seed(0)
                ode = ClexOde(dim, params["rope_theta"], loaded.native_context_length, max_factor=16.0)
        else:
            folder = model_folder(loaded)
            file = Path(self.path).expanduser() if self.path else (folder / FILE_NAME if folder else None)
            if file is None or not file.is_file():
                where = file if file is not None else f"the folder of model {loaded.name!r}"
                raise LongreachError(
                    f"clex: no CLEX parameters at {where}; train them with `longreach train --recipe clex`, "
                    "give clex:path=FILE, or clex:untrained=true for the ODE at initialisation"
                )
            ode = ClexOde.load(file)
            if ode.dim != dim or not math.isclose(ode.base, params["rope_theta"]):
                raise LongreachError(
                    f"clex: {file} was trained for d={ode.dim}, base={ode.base:g}; this model has "
                    f"d={dim}, base={params['rope_theta']:g}"
                )
        if self.max_factor:
            ode.max_factor = self.max_factor
        return ode.to(loaded.model.device if hasattr(loaded.model, "device") else "cpu")

    def rope_updates(self, native: int) -> dict[str, Any]:
        return {}

    def inv_freq(self, loaded: LoadedModel, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
        ode = self.ode(loaded)
        with torch.no_grad():
            return ode.inv_freq(ode.scale(seq_len or loaded.native_context_length, self.rounding)), 1.0

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        ode = self.ode(loaded)
        solved: dict[float, torch.Tensor] = {}  # one ODE solve per scale: decode steps reuse it

        def provider(seq_len: int, layer_type: str | None) -> tuple[torch.Tensor, float]:
            t = ode.scale(seq_len, self.rounding)
            if t not in solved:
                with torch.no_grad():
                    solved[t] = ode.inv_freq(t)
            return solved[t], 1.0

        with adapter.patched_rope(loaded.model, provider, adapter.long_range_layer_types(loaded.model.config)):
            yield
