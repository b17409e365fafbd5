"""The DFloat11 codec for one bfloat16 tensor: Huffman-coded exponents, raw sign+mantissa bytes.

DFloat11 (Zhang et al. 2025, arXiv 2504.11651). A bfloat16 weight is 16 bits, ``s eeeeeeee mmmmmmm``:
- exponent ``e = (w >> 7) & 0xFF``: a few dozen values occur, ~2.6 bits of entropy -> Huffman-coded;
- sign+mantissa ``sm = (w >> 8) & 0x80 | w & 0x7F``: near-uniform -> one raw byte per weight.
The result is about 8 + 2.6 ≈ 11 bits per weight. Shapes: ``bits`` uint16[n] (a flattened tensor),
``stream`` uint8[ceil(total_bits / 8)], ``offsets`` int64[ceil(n / block_size) + 1], ``sign_mantissa`` uint8[n].
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from longreach.errors import LongreachError
from longreach.weights import huffman, kernels

DEFAULT_BLOCK_SIZE = 16384  # exponents a block: 8 bytes of offset per 16K weights (0.004 bits a weight)
DEFAULT_MAX_CODE_LENGTH = 12  # 4096-entry decode table (8 KiB, fits in L1)
PARALLEL_MIN_WEIGHTS = 1 << 20  # below this, one thread decodes the whole tensor


@dataclass(frozen=True)
class EncodedTensor:
    """One tensor's coded exponents, block start offsets, raw sign+mantissa bytes and code lengths."""

    numel: int
    block_size: int
    code: np.ndarray  # int64[k, 2]: (exponent value, code length) of the k values present; one value: length 0
    stream: np.ndarray  # uint8[ceil(total_bits / 8)]
    offsets: np.ndarray  # int64[blocks + 1], bit offset of each block, last = total bits
    sign_mantissa: np.ndarray  # uint8[numel]

    @property
    def total_bits(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Stored payload bytes (stream + offsets + sign/mantissa; the code lengths live in the header)."""
        return self.stream.nbytes + self.offsets.nbytes + self.sign_mantissa.nbytes


def split(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint16[n] bfloat16 bit patterns -> (exponent uint8[n], sign+mantissa uint8[n])."""
    exponent = ((bits >> 7) & 0xFF).astype(np.uint8)
    sign_mantissa = (((bits >> 8) & 0x80) | (bits & 0x7F)).astype(np.uint8)
    return exponent, sign_mantissa


def check_params(block_size: int, max_code_length: int) -> None:
    """Raise :class:`LongreachError` for an encoder setting out of range, naming the valid range."""
    if not 1 <= block_size <= 2**30:
        raise LongreachError(f"block size must be in [1, 2**30] exponents, got {block_size}")
    if not 8 <= max_code_length <= huffman.MAX_CODE_LENGTH:
        raise LongreachError(f"max code length must be in [8, {huffman.MAX_CODE_LENGTH}] bits, got {max_code_length}")


def num_blocks(numel: int, block_size: int) -> int:
    return -(-numel // block_size)


def encode(
    bits: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE, max_code_length: int = DEFAULT_MAX_CODE_LENGTH
) -> EncodedTensor:
    """Encode uint16[n] bfloat16 bit patterns (any layout; flattened in C order)."""
    if bits.dtype != np.uint16:
        raise ValueError(f"encode takes uint16 bit patterns, got {bits.dtype}")
    check_params(block_size, max_code_length)
    exponent, sign_mantissa = split(np.ascontiguousarray(bits).reshape(-1))
    counts = np.bincount(exponent, minlength=huffman.ALPHABET)
    lengths = huffman.code_lengths(counts, max_code_length)
    present = np.flatnonzero(counts)
    code = np.stack([present, lengths[present]], axis=1).astype(np.int64).reshape(-1, 2)
    per_symbol = lengths[exponent].astype(np.int64)
    padded = np.zeros(num_blocks(exponent.size, block_size) * block_size, dtype=np.int64)
    padded[: per_symbol.size] = per_symbol
    offsets = np.concatenate([[0], np.cumsum(padded.reshape(-1, block_size).sum(axis=1))]).astype(np.int64)
    stream = np.zeros(-(-int(offsets[-1]) // 8), dtype=np.uint8)
    written = kernels.pack_codes(exponent, huffman.canonical_codes(lengths), lengths, stream)
    if written != offsets[-1]:
        raise RuntimeError(f"encoder wrote {written} bits, expected {offsets[-1]}")  # a bug, not bad input
    return EncodedTensor(exponent.size, block_size, code, stream, offsets, sign_mantissa)


def full_lengths(code: np.ndarray) -> np.ndarray:
    """int64[k, 2] (symbol, length) pairs -> uint8[256] lengths (0 = absent)."""
    lengths = np.zeros(huffman.ALPHABET, dtype=np.uint8)
    lengths[code[:, 0]] = code[:, 1]
    return lengths


def check_structure(encoded: EncodedTensor, what: str) -> None:
    """Raise :class:`LongreachError` naming ``what`` unless the parts fit together (sizes, code, offsets)."""
    code, offsets, n = encoded.code, encoded.offsets, encoded.numel

    def fail(problem: str) -> None:
        raise LongreachError(f"{what}: {problem} (corrupt file?)")

    if encoded.block_size < 1:
        fail(f"block size {encoded.block_size} must be >= 1")
    if encoded.sign_mantissa.size != n:
        fail(f"{encoded.sign_mantissa.size} sign/mantissa bytes for {n} weights")
    if offsets.size != num_blocks(n, encoded.block_size) + 1:
        fail(f"{offsets.size} block offsets for {n} weights in blocks of {encoded.block_size}")
    if code.ndim != 2 or code.shape[1] != 2 or (n > 0) != (code.shape[0] > 0):
        fail(f"code table of shape {code.shape} for {n} weights")
    symbols, lengths = code[:, 0], code[:, 1]
    if code.size and (symbols.min() < 0 or symbols.max() > 255 or len(set(symbols.tolist())) != len(symbols)):
        fail("code table symbols must be distinct bytes")
    if (len(symbols) == 1) != (code.size > 0 and lengths.max() == 0) or (len(symbols) > 1 and lengths.min() < 1):
        fail("code lengths must be 0 for a lone exponent value and >= 1 otherwise")
    huffman.check_lengths(lengths, what)
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] > 8 * encoded.stream.size:
        fail(f"block offsets must rise from 0 to at most {8 * encoded.stream.size} bits")
    if -(-int(offsets[-1]) // 8) != encoded.stream.size:
        fail(f"{encoded.stream.size} stream bytes for {offsets[-1]} bits")


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Threads for block-parallel decoding (the numba kernel releases the GIL); made on first use."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="longreach-df11")


def decode(encoded: EncodedTensor, what: str = "tensor", threads: int | None = None) -> np.ndarray:
    """uint16[numel] bfloat16 bit patterns; raises :class:`LongreachError` naming ``what`` on a bad stream.

    Blocks decode independently (their start bits are stored), so a large tensor is split into ``threads``
    ranges of blocks decoded at once (default: the CPU count, at most 8); small tensors use one thread.
    """
    check_structure(encoded, what)
    out = np.empty(encoded.numel, dtype=np.uint16)
    if encoded.numel == 0:
        return out
    lengths = full_lengths(encoded.code)
    table_bits = int(lengths.max())
    if table_bits == 0:  # one exponent value: nothing was coded, every weight has it
        if encoded.total_bits != 0:
            raise LongreachError(f"{what}: {encoded.total_bits} coded bits for a single exponent value (corrupt file?)")
        sm = encoded.sign_mantissa.astype(np.uint16)
        out[:] = ((sm & 0x80) << 8) | (int(encoded.code[0, 0]) << 7) | (sm & 0x7F)
        return out
    table = huffman.decode_table(lengths)
    multi = huffman.multi_table(table)
    blocks = encoded.offsets.size - 1
    status = np.zeros(blocks, dtype=np.uint8)

    def run(first: int, last: int) -> None:
        kernels.decode_blocks(
            encoded.stream, encoded.offsets, encoded.sign_mantissa, table, multi, table_bits, encoded.block_size,
            first, last, out, status,
        )  # fmt: skip

    workers = min(threads or _default_threads(), blocks) if encoded.numel >= PARALLEL_MIN_WEIGHTS else 1
    if workers <= 1:
        run(0, blocks)
    else:
        bounds = np.linspace(0, blocks, workers + 1).astype(int)
        list(_pool(workers).map(run, bounds[:-1], bounds[1:]))
    bad = np.flatnonzero(status)
    if bad.size:
        reason = (
            "a bit pattern with no code" if status[bad[0]] == 1 else "a block that does not end where the next starts"
        )
        raise LongreachError(f"{what}: corrupt exponent stream: {reason} in block {bad[0]} of {status.size}")
    return out
