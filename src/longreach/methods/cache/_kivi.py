"""The int8 / int4 KV storage in KIVI's layout (arXiv 2402.02750), shared by ``quantized`` and the evicting
methods' ``bits`` knob.

Keys are quantized per channel (one scale and zero point per channel for every ``group`` tokens: key outliers
live in fixed channels), values per token (one scale and zero point per token and head). The newest tokens,
fewer than ``group``, stay in the model's dtype until a group fills. Asymmetric min/max quantization:
``code = round((x - min) / scale)``, ``scale = (max - min) / (2^bits - 1)``, so a value is off by at most
``scale / 2``. Codes are stored as uint8 (int4: two codes a byte), scales and zero points in the model dtype,
so the physical bytes per token and channel are 1 (int8) or 0.5 (int4) plus 2 x itemsize / ``group``
(keys) and 2 x itemsize / d (values). Attention dequantizes the stored tokens at every step (memory for
compute: decoding is slower than with a float cache).

Shapes: keys/values (b, k, n, d); key codes (b, k, nq, d / p), key scale/zero (b, k, nq / group, d);
value codes (b, k, nq, d / p), value scale/zero (b, k, nq, 1); p = 8 / bits codes per byte; nq quantized tokens.
"""

from __future__ import annotations

from typing import Any

import torch


def quantize(x: torch.Tensor, dim: int, bits: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric quantization of ``x`` with one (scale, zero) per slice along ``dim``: (uint8 codes, scale, zero)."""
    low = x.amin(dim=dim, keepdim=True)
    high = x.amax(dim=dim, keepdim=True)
    levels = 2**bits - 1
    scale = ((high - low) / levels).to(x.dtype)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    codes = torch.round((x.float() - low.float()) / safe.float()).clamp_(0, levels).to(torch.uint8)
    return codes, scale, low.to(x.dtype)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (..., d) -> (..., d * bits / 8): int4 puts two codes in a byte (low nibble first)."""
    if bits == 8:
        return codes.contiguous()
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).contiguous()


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return packed
    low, high = packed & 0x0F, packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)


class QuantizedStorage:
    """One layer's KV cache: quantized groups of tokens plus a float residual of the newest tokens.
    Combined with transformers' ``DynamicLayer`` by :func:`quantized_layer` (imported only when used)."""

    is_croppable = False

    def __init__(self, bits: int, group: int) -> None:
        super().__init__()
        self.bits, self.group = bits, group
        self.key_codes: torch.Tensor | None = None
        self.key_scale: torch.Tensor | None = None
        self.key_zero: torch.Tensor | None = None
        self.value_codes: torch.Tensor | None = None
        self.value_scale: torch.Tensor | None = None
        self.value_zero: torch.Tensor | None = None

    @property
    def quantized_tokens(self) -> int:
        return 0 if self.key_codes is None else self.key_codes.shape[2]

    def get_seq_length(self) -> int:
        residual = self.keys.shape[2] if self.is_initialized and self.keys.dim() == 4 else 0
        return self.quantized_tokens + residual

    def dequantized(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Float keys and values (b, k, nq, d) of the quantized tokens (built on the fly, never stored)."""
        b, k, nq, _ = self.key_codes.shape
        keys = unpack(self.key_codes, self.bits).to(self.key_scale.dtype)
        keys = keys.reshape(b, k, nq // self.group, self.group, -1)
        keys = (keys * self.key_scale.unsqueeze(3) + self.key_zero.unsqueeze(3)).reshape(b, k, nq, -1)
        values = unpack(self.value_codes, self.bits).to(self.value_scale.dtype) * self.value_scale + self.value_zero
        return keys, values

    def _store(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Quantize whole groups of tokens (b, k, m * group, d) and append them to the stored codes."""
        b, k, m, d = keys.shape
        grouped = keys.reshape(b, k, m // self.group, self.group, d)
        key_codes, key_scale, key_zero = quantize(grouped, dim=3, bits=self.bits)
        value_codes, value_scale, value_zero = quantize(values, dim=3, bits=self.bits)
        parts = {
            "key_codes": pack(key_codes.reshape(b, k, m, d), self.bits),
            "key_scale": key_scale.squeeze(3),
            "key_zero": key_zero.squeeze(3),
            "value_codes": pack(value_codes, self.bits),
            "value_scale": value_scale,
            "value_zero": value_zero,
        }
        for name, part in parts.items():
            old = getattr(self, name)
            setattr(self, name, part if old is None else torch.cat((old, part), dim=2))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Append new tokens; returns every token's (dequantized or float) keys and values for attention."""
        if not self.is_initialized:
            if self.bits == 4 and key_states.shape[-1] % 2:
                raise ValueError(f"int4 packing needs an even head dim; got {key_states.shape[-1]}")
            self.lazy_initialization(key_states, value_states)
        keys = torch.cat((self.keys, key_states), dim=2)
        values = torch.cat((self.values, value_states), dim=2)
        if self.key_codes is not None:
            old_keys, old_values = self.dequantized()
            full_keys, full_values = torch.cat((old_keys, keys), dim=2), torch.cat((old_values, values), dim=2)
        else:
            full_keys, full_values = keys, values
        whole = keys.shape[2] - keys.shape[2] % self.group
        if whole:
            self._store(keys[:, :, :whole], values[:, :, :whole])
        self.keys, self.values = keys[:, :, whole:].clone(), values[:, :, whole:].clone()
        return full_keys, full_values

    def crop(self, max_length: int) -> None:
        raise NotImplementedError("a quantized KV cache cannot be cropped")
