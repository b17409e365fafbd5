"""Whether this CPU runs bf16 fast, and a warning when it does not.

torch sends bf16 matmuls to oneDNN only where the CPU has AVX-512 (``avx512_core``) or AMX. Elsewhere, on an
AVX2-only CPU such as some AMD EPYC machines, a bf16 ``bmm`` falls back to a single-threaded reference GEMM and a bf16
``linear`` to a converting path. Measured on such a machine (``benchmarks/results/cpu_dtype_speed.md``): a 2K prefill
of SmolLM2 took 3.5x the fp32 time and a LoRA training step 27x. Loading a model in bf16 on such a CPU
therefore warns once and names the faster dtype; it does not switch dtype by itself (results record the dtype they
ran in, and a silent switch would change them).
"""

from __future__ import annotations

import functools
import warnings

from longreach.errors import LongreachWarning

_FAST_BF16_FLAGS = ("avx512bw", "amx_bf16")  # the CPU flags that give oneDNN a bf16 path, when torch cannot say


def cpuinfo_field(key: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The value of the first ``key : value`` line of ``cpuinfo`` ("" when no line has the key; None when the file
    cannot be read, as off Linux). The one reader of /proc/cpuinfo: provenance takes the CPU's name and flags here."""
    try:
        with open(cpuinfo) as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.split(":", 1)[0].strip() == key), "")
    except OSError:
        return None


def bf16_fast_by_flags(flags: set[str]) -> bool:
    """The fallback test: AVX-512 BW or AMX-BF16 among the CPU's flags (no flags known: assume fast, no warning)."""
    return not flags or any(flag in flags for flag in _FAST_BF16_FLAGS)


@functools.cache
def fast_bf16() -> bool:
    """True when torch runs bf16 matmuls on this CPU through oneDNN (torch's own test), False on the slow fallback.
    Where torch does not expose the test, the CPU flags decide (:func:`bf16_fast_by_flags`)."""
    import torch

    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    return bf16_fast_by_flags(set((cpuinfo_field("flags") or "").split()))


def warn_if_slow_bf16(dtype: str, device: str) -> None:
    """Warn (``LongreachWarning``) when ``dtype`` is bf16 on a CPU without a fast bf16 path."""
    if dtype == "bf16" and device == "cpu" and not fast_bf16():
        warnings.warn(
            "this CPU has no AVX-512/AMX, so torch runs bf16 matmuls on a slow fallback (measured on such a CPU: "
            "a prefill took 3.5x, a LoRA training step 27x the fp32 time); --dtype fp32 is faster here",
            LongreachWarning,
            stacklevel=3,
        )
