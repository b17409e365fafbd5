"""The ``.df11`` file: a safetensors-style container for DFloat11-coded and raw tensors.

Layout (all integers little-endian)::

    u64 header_length | header: UTF-8 JSON, header_length bytes | data: sections, each 8-byte aligned

The header maps each tensor name to its entry; ``__metadata__`` holds ``format`` ("longreach-dfloat11"),
``version`` (1) and free-form string facts (source model, ...). Entries are one of:

- ``{"codec": "df11", "dtype": "bfloat16", "shape": [...], "block_size": N, "code": [[exponent, length], ...],
  "sections": {"stream": [begin, end], "offsets": [...], "sign_mantissa": [...]}, "crc32": c}``:
  stream uint8 (MSB-first codes), offsets int64[blocks + 1] (bit offset of each block), sign_mantissa uint8[n];
- ``{"codec": "raw", "dtype": "float32", "shape": [...], "sections": {"raw": [begin, end]}, "crc32": c}``:
  the tensor's bytes in C order;
- ``{"alias": "other.name"}``: the same storage as another tensor (tied embeddings are stored once).

``crc32`` covers the entry itself (canonical JSON without the crc field) and then its sections in order, so a
flipped bit in the data or in the tensor's header fields fails loudly, naming the tensor.
"""

from __future__ import annotations

import json
import mmap
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longreach.errors import LongreachError
from longreach.weights import codec

FORMAT = "longreach-dfloat11"
VERSION = 1
ALIGN = 8
MAX_HEADER_BYTES = 100 * 2**20
RAW_DTYPES: dict[str, torch.dtype] = {
    str(dtype).removeprefix("torch."): dtype
    for dtype in (torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int8, torch.uint8)
    + (torch.int16, torch.int32, torch.int64, torch.bool)
}
DF11_SECTIONS = ("stream", "offsets", "sign_mantissa")


def _checksum(entry: Mapping[str, Any], sections: list[np.ndarray]) -> int:
    described = {key: value for key, value in entry.items() if key != "crc32"}
    crc = zlib.crc32(json.dumps(described, sort_keys=True, separators=(",", ":")).encode())
    for section in sections:
        crc = zlib.crc32(section, crc)
    return crc


def _raw_bytes(tensor: torch.Tensor) -> np.ndarray:
    """The C-order bytes of a CPU tensor, as uint8[nbytes]."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy() if flat.numel() else np.zeros(0, np.uint8)


def _dtype_name(tensor: torch.Tensor) -> str:
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in RAW_DTYPES:
        raise LongreachError(f"cannot store dtype {name}; supported: {', '.join(RAW_DTYPES)}")
    return name


def _storage_key(tensor: torch.Tensor) -> tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype]:
    return (
        tensor.untyped_storage().data_ptr(),
        tensor.storage_offset(),
        tuple(tensor.shape),
        tensor.stride(),
        tensor.dtype,
    )


def write(
    path: Path,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
    block_size: int = codec.DEFAULT_BLOCK_SIZE,
    max_code_length: int = codec.DEFAULT_MAX_CODE_LENGTH,
) -> dict[str, Any]:
    """Write ``tensors`` to ``path``: bfloat16 ones DFloat11-coded, others raw, views of one storage once.

    Returns the header as written.
    """
    header: dict[str, Any] = {"__metadata__": {"format": FORMAT, "version": VERSION, **(metadata or {})}}
    blobs: list[np.ndarray] = []
    cursor = 0
    first_name: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        if name == "__metadata__":
            raise LongreachError("a tensor cannot be named __metadata__")
        key = _storage_key(tensor)
        if key in first_name and tensor.numel() > 0:
            header[name] = {"alias": first_name[key]}
            continue
        first_name[key] = name
        entry: dict[str, Any] = {"dtype": _dtype_name(tensor), "shape": list(tensor.shape)}
        if tensor.dtype == torch.bfloat16:
            encoded = codec.encode(_raw_bytes(tensor).view(np.uint16), block_size, max_code_length)
            entry.update(codec="df11", block_size=encoded.block_size, bits=encoded.total_bits)
            entry["code"] = encoded.code.tolist()
            parts = {"stream": encoded.stream, "offsets": encoded.offsets.astype("<i8").view(np.uint8)}
            parts["sign_mantissa"] = encoded.sign_mantissa
        else:
            entry["codec"] = "raw"
            parts = {"raw": _raw_bytes(tensor)}
        entry["sections"] = {}
        for part, data in parts.items():
            entry["sections"][part] = [cursor, cursor + data.size]
            blobs.append(data)
            padding = -data.size % ALIGN
            if padding:
                blobs.append(np.zeros(padding, np.uint8))
            cursor += data.size + padding
        entry["crc32"] = _checksum(entry, list(parts.values()))
        header[name] = entry
    encoded_header = json.dumps(header, separators=(",", ":")).encode()
    encoded_header += b" " * (-len(encoded_header) % ALIGN)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(encoded_header)))
        file.write(encoded_header)
        for blob in blobs:
            file.write(memoryview(blob))
    return header


class CompressedFile:
    """A ``.df11`` file opened for reading (memory-mapped): header checks up front, tensors on demand."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as file:
                size = self.path.stat().st_size
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise LongreachError(f"cannot read {self.path}: {exc.strerror}") from None
        self._bytes = np.frombuffer(mapped, dtype=np.uint8)
        self.header = self._read_header()
        meta = self.header.get("__metadata__", {})
        self.metadata: dict[str, Any] = meta if isinstance(meta, dict) else {}
        self.names = [name for name in self.header if name != "__metadata__"]

    def _read_header(self) -> dict[str, Any]:
        size = self._bytes.size
        if size < 8:
            raise LongreachError(f"{self.path} is not a .df11 file: only {size} bytes (truncated?)")
        (length,) = struct.unpack("<Q", self._bytes[:8].tobytes())
        if length > min(size - 8, MAX_HEADER_BYTES):
            raise LongreachError(
                f"{self.path}: header of {length} bytes runs past the end of the file ({size} bytes): "
                "truncated, or not a .df11 file"
            )
        try:
            header = json.loads(self._bytes[8 : 8 + length].tobytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LongreachError(f"{self.path}: the header is not valid JSON ({exc}): corrupt file") from None
        meta = header.get("__metadata__") if isinstance(header, dict) else None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise LongreachError(f"{self.path} is not a {FORMAT} file (its header names no such format)")
        if meta.get("version") != VERSION:
            raise LongreachError(
                f"{self.path}: format version {meta.get('version')!r} is not supported (only {VERSION})"
            )
        self._data_start = 8 + length
        return header

    def _entry(self, name: str) -> dict[str, Any]:
        if name not in self.names:
            raise LongreachError(f"{self.path} has no tensor {name!r}")
        entry = self.header[name]
        if isinstance(entry, dict) and "alias" in entry:
            target = entry["alias"]
            if target == name or target not in self.names or "alias" in self.header[target]:
                raise LongreachError(
                    f"tensor {name!r}: alias of {target!r}, which is not a stored tensor (corrupt header?)"
                )
            return self._entry(target)
        return entry

    def _sections(self, name: str, entry: dict[str, Any], parts: tuple[str, ...]) -> list[np.ndarray]:
        """The named byte sections of a tensor, after checking bounds and the checksum."""
        sections = entry.get("sections")
        if not isinstance(sections, dict) or set(sections) != set(parts):
            raise LongreachError(f"tensor {name!r}: header must list sections {list(parts)} (corrupt header?)")
        available = self._bytes.size - self._data_start
        found = []
        for part in parts:
            span = sections[part]
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span)):
                raise LongreachError(f"tensor {name!r}: section {part} is {span!r}, not [begin, end] (corrupt header?)")
            begin, end = span
            if not 0 <= begin <= end:
                raise LongreachError(f"tensor {name!r}: section {part} has bad bounds {span} (corrupt header?)")
            if end > available:
                raise LongreachError(
                    f"tensor {name!r}: its {part} data ends at byte {end} but the file holds {available} data bytes "
                    "(truncated file)"
                )
            found.append(self._bytes[self._data_start + begin : self._data_start + end])
        if _checksum(entry, found) != entry.get("crc32"):
            raise LongreachError(f"tensor {name!r}: checksum mismatch (corrupt file)")
        return found

    def _facts(self, name: str, entry: dict[str, Any]) -> tuple[torch.dtype, list[int]]:
        dtype, shape = entry.get("dtype"), entry.get("shape")
        if dtype not in RAW_DTYPES:
            raise LongreachError(f"tensor {name!r}: unknown dtype {dtype!r}; valid: {', '.join(RAW_DTYPES)}")
        if not (isinstance(shape, list) and all(isinstance(v, int) and v >= 0 for v in shape)):
            raise LongreachError(f"tensor {name!r}: bad shape {shape!r} (corrupt header?)")
        return RAW_DTYPES[dtype], shape

    def encoded(self, name: str) -> codec.EncodedTensor:
        """The coded parts of a df11 tensor, checked (bounds, checksum) but not decoded."""
        entry = self._entry(name)
        if entry.get("codec") != "df11":
            raise LongreachError(f"tensor {name!r} is stored with codec {entry.get('codec')!r}, not df11")
        _, shape = self._facts(name, entry)
        stream, offsets, sign_mantissa = self._sections(name, entry, DF11_SECTIONS)
        if offsets.size % 8:
            raise LongreachError(f"tensor {name!r}: offsets section of {offsets.size} bytes (corrupt header?)")
        code = np.asarray(entry.get("code"), dtype=np.int64)
        return codec.EncodedTensor(
            numel=int(np.prod(shape, dtype=np.int64)),
            block_size=entry.get("block_size") if isinstance(entry.get("block_size"), int) else 0,
            code=code.reshape(-1, 2) if code.size else np.zeros((0, 2), np.int64),
            stream=stream,
            offsets=offsets.view("<i8"),
            sign_mantissa=sign_mantissa,
        )

    def tensor(self, name: str) -> torch.Tensor:
        """Decode one tensor (bit-exact), raising :class:`LongreachError` naming it if anything is off."""
        entry = self._entry(name)
        dtype, shape = self._facts(name, entry)
        kind = entry.get("codec")
        if kind == "df11":
            if dtype != torch.bfloat16:
                raise LongreachError(f"tensor {name!r}: df11 codes bfloat16 only, header says {dtype}")
            bits = codec.decode(self.encoded(name), what=f"tensor {name!r}")
            return torch.from_numpy(bits).view(torch.bfloat16).reshape(shape)
        if kind == "raw":
            (raw,) = self._sections(name, entry, ("raw",))
            itemsize = torch.empty((), dtype=dtype).element_size()
            if raw.size != itemsize * int(np.prod(shape, dtype=np.int64)):
                raise LongreachError(
                    f"tensor {name!r}: {raw.size} bytes for shape {shape} of {dtype} (corrupt header?)"
                )
            return torch.from_numpy(raw.copy()).view(dtype).reshape(shape)
        raise LongreachError(f"tensor {name!r}: unknown codec {kind!r}; valid: df11, raw")

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor, decoded; aliases share the storage of their target, as they did when written."""
        out: dict[str, torch.Tensor] = {}
        for name in self.names:
            target = self._entry(name)
            owner = next(n for n in self.names if self.header[n] is target)
            if owner not in out:
                out[owner] = self.tensor(owner)
            out[name] = out[owner]
        return out
