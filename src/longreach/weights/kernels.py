"""Numba kernels: pack Huffman codes into one MSB-first bit stream; decode blocks of it in parallel.

Bit layout (DFloat11, arXiv 2504.11651, section 3.2, adapted to CPUs):
- ``stream``: uint8[ceil(bits / 8)], the codes of all n exponents back to back, most significant bit first.
- ``offsets``: int64[blocks + 1], the bit at which block b (exponents ``b*N .. b*N+N-1``) starts; the last
  entry is the total bit count. DFloat11's GPU kernel finds thread starts with a counting pass (phase 1) and
  a prefix sum; storing the prefix sum itself makes every block decodable on its own, in any order.
- ``sign_mantissa``: uint8[n], ``sign << 7 | mantissa`` of each weight, kept raw.
- output: uint16[n] bfloat16 bit patterns, ``(sm & 0x80) << 8 | exponent << 7 | (sm & 0x7F)``.

Everything is int64 arithmetic. The bit buffer keeps its ``held`` valid bits at the bottom (<= 56); bits
shifted out at the top are stale and every read masks them off.
"""

from __future__ import annotations

import numba
import numpy as np

from longreach.weights.huffman import LENGTH_SHIFT


@numba.njit(cache=True, nogil=True)
def pack_codes(symbols: np.ndarray, codes: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> int:
    """Write ``codes[s]`` (``lengths[s]`` bits, <= 32) of every symbol into ``out``; returns bits written."""
    acc = np.int64(0)
    held = 0
    pos = 0
    written = 0
    for i in range(symbols.size):
        s = symbols[i]
        n = np.int64(lengths[s])
        acc = (acc << n) | np.int64(codes[s])
        held += n
        written += n
        while held >= 8:
            held -= 8
            out[pos] = (acc >> held) & 0xFF
            pos += 1
        acc &= (np.int64(1) << held) - 1
    if held > 0:
        out[pos] = (acc << (8 - held)) & 0xFF
    return written


@numba.njit(cache=True, nogil=True)
def decode_blocks(
    stream: np.ndarray,
    offsets: np.ndarray,
    sign_mantissa: np.ndarray,
    table: np.ndarray,
    multi: np.ndarray,
    table_bits: int,
    block_size: int,
    first: int,
    last: int,
    out: np.ndarray,
    status: np.ndarray,
) -> None:
    """Decode blocks ``first .. last - 1`` of ``block_size`` exponents each and write bfloat16 bits to ``out``.

    ``table`` (uint16) gives one symbol a lookup, ``multi`` (uint32, :func:`huffman.multi_table`) up to three;
    ``multi`` is used while three or more exponents of the block remain (its three writes stay in the block,
    surplus ones are overwritten next). Releases the GIL, so threads may decode disjoint block ranges at once.
    Sets ``status[b]`` to 1 when block b holds a bit pattern with no code, 2 when it does not end exactly where
    block b + 1 starts (both mean a corrupt stream or offsets), and leaves 0 otherwise.
    """
    n = out.size
    nbytes = stream.size
    mask = (np.int64(1) << table_bits) - 1
    for b in range(first, last):
        start = b * block_size
        stop = min(start + block_size, n)
        bit = offsets[b]
        pos = bit >> 3
        held = np.int64(0)
        buf = np.int64(0)
        if pos < nbytes:
            held = 8 - (bit & 7)
            buf = np.int64(stream[pos]) & ((np.int64(1) << held) - 1)
        pos += 1
        i = start
        while i < stop:
            if held < table_bits:  # top up to 49..56 bits; bits above `held` are stale and masked off below
                while held <= 48:
                    byte = np.int64(stream[pos]) if pos < nbytes else np.int64(0)
                    buf = (buf << 8) | byte
                    held += 8
                    pos += 1
            window = (buf >> (held - table_bits)) & mask
            if i + 3 <= stop:
                entry = np.int64(multi[window])
                count = entry >> 30
                if count == 0:
                    status[b] = 1
                    break
                for k in range(3):
                    sm = np.int64(sign_mantissa[i + k])
                    out[i + k] = ((sm & 0x80) << 8) | (((entry >> (8 * k)) & 0xFF) << 7) | (sm & 0x7F)
                held -= (entry >> 24) & 0x3F
                i += count
            else:
                entry = np.int64(table[window])
                length = entry >> LENGTH_SHIFT
                if length == 0:
                    status[b] = 1
                    break
                sm = np.int64(sign_mantissa[i])
                out[i] = ((sm & 0x80) << 8) | ((entry & 0xFF) << 7) | (sm & 0x7F)
                held -= length
                i += 1
        if status[b] == 0 and pos * 8 - held != offsets[b + 1]:
            status[b] = 2
