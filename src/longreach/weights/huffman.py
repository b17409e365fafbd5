"""Length-limited canonical Huffman codes over byte symbols (the bfloat16 exponents of DFloat11).

DFloat11 (Zhang et al. 2025, "70% Size, 100% Accuracy", arXiv 2504.11651, section 3) Huffman-codes the
8-bit exponent of every bfloat16 weight and caps code lengths at 32 bits so the GPU decoder can use a few
256-entry lookup tables. Here the cap is chosen by the caller (default 12 bits in :mod:`codec`) and met
optimally with the package-merge algorithm (Larmore & Hirschberg 1990), not by flattening the rarest
frequencies, so a flat decode table of ``2**max_length`` entries (8 KiB at 12 bits) suffices.

Codes are canonical: only the code length of each symbol is stored; codes are assigned in order of
(length, symbol), most significant bit first.
"""

from __future__ import annotations

import numpy as np

from longreach.errors import LongreachError

ALPHABET = 256  # symbols are bytes: the 8-bit exponent field of bfloat16
MAX_CODE_LENGTH = 20  # decode tables have 2**max_length uint16 entries: at most 2 MiB
LENGTH_SHIFT = 8  # a decode-table entry is ``symbol | length << LENGTH_SHIFT`` (uint16); length 0 = invalid


def code_lengths(counts: np.ndarray, max_length: int) -> np.ndarray:
    """Optimal prefix-code lengths with no length above ``max_length`` (package-merge).

    counts: int64[256], how often each symbol occurs. Returns uint8[256]: 0 for absent symbols. A lone
    symbol gets length 0 (its stream is empty); two or more get lengths >= 1 with Kraft sum exactly 1.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.shape != (ALPHABET,) or (counts < 0).any():
        raise ValueError(f"counts must be 256 non-negative integers, got shape {counts.shape}")
    symbols = np.flatnonzero(counts)
    lengths = np.zeros(ALPHABET, dtype=np.uint8)
    if len(symbols) <= 1:
        return lengths
    if not 1 <= max_length <= MAX_CODE_LENGTH or 2**max_length < len(symbols):
        raise LongreachError(
            f"max code length {max_length} cannot code {len(symbols)} symbols: "
            f"need 2**length >= symbols and length <= {MAX_CODE_LENGTH}"
        )
    # Each item is (weight, multiset of leaves as a count vector over `symbols`); leaves sorted by weight.
    order = np.argsort(counts[symbols], kind="stable")
    leaves = [(int(counts[symbols[i]]), np.eye(1, len(symbols), i, dtype=np.int64)[0]) for i in order]
    items = leaves
    for _ in range(max_length - 1):
        packages = [(items[k][0] + items[k + 1][0], items[k][1] + items[k + 1][1]) for k in range(0, len(items) - 1, 2)]
        items = sorted(leaves + packages, key=lambda item: item[0])  # stable: leaves before packages on ties
    chosen = items[: 2 * len(symbols) - 2]
    lengths[symbols] = np.sum([vector for _, vector in chosen], axis=0).astype(np.uint8)
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """uint32[256] codes for uint8[256] lengths: symbols sorted by (length, symbol) get consecutive codes."""
    codes = np.zeros(ALPHABET, dtype=np.uint32)
    code, previous = 0, 0
    for symbol in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[symbol]) - previous
        codes[symbol] = code
        code, previous = code + 1, int(lengths[symbol])
    return codes


def check_lengths(lengths: np.ndarray, what: str) -> None:
    """Raise :class:`LongreachError` unless ``lengths`` describe a usable prefix code (Kraft sum <= 1)."""
    used = lengths[lengths > 0].astype(np.int64)
    if used.size and used.max() > MAX_CODE_LENGTH:
        raise LongreachError(f"{what}: code length {used.max()} exceeds {MAX_CODE_LENGTH} bits (corrupt header?)")
    if used.size and np.sum(2.0 ** (-used.astype(np.float64))) > 1.0:
        raise LongreachError(f"{what}: code lengths are not a prefix code (Kraft sum > 1; corrupt header?)")


def decode_table(lengths: np.ndarray) -> np.ndarray:
    """uint16[2**L] table, L = max length: entry at the next L bits = ``symbol | length << 8``; 0 = no code.

    In canonical order the codes cover consecutive ranges of the table (a code of length l spans
    ``2**(L - l)`` entries), so the table is the entries repeated, then zeros where the code is incomplete.
    """
    table_bits = int(lengths.max())
    symbols = np.array(sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)), dtype=np.int64)
    spans = 1 << (table_bits - lengths[symbols].astype(np.int64))
    entries = np.repeat(symbols | (lengths[symbols].astype(np.int64) << LENGTH_SHIFT), spans)
    table = np.zeros(2**table_bits, dtype=np.uint16)
    table[: entries.size] = entries
    return table


MULTI_SYMBOLS = 3  # symbols a multi-symbol table entry can hold


def multi_table(table: np.ndarray) -> np.ndarray:
    """uint32[2**L]: up to 3 whole codes at the front of each L-bit window, for fewer lookups a symbol.

    Entry bits: 0-23 the symbols (8 bits each, first in the low byte), 24-28 the bits they use together,
    30-31 how many there are (0 = the window starts with no code). ``table`` is :func:`decode_table`'s.
    """
    table_bits = int(np.log2(table.size))
    mask = table.size - 1
    windows = np.arange(table.size, dtype=np.int64)
    symbols = np.zeros(table.size, np.int64)
    used = np.zeros(table.size, np.int64)
    count = np.zeros(table.size, np.int64)
    for slot in range(MULTI_SYMBOLS):
        entry = table[(windows << used) & mask].astype(np.int64)
        length = entry >> LENGTH_SHIFT
        fits = (count == slot) & (length > 0) & (length <= table_bits - used)
        symbols |= np.where(fits, (entry & 0xFF) << (8 * slot), 0)
        used += np.where(fits, length, 0)
        count += fits
    return (symbols | used << 24 | count << 30).astype(np.uint32)


def entropy_bits(counts: np.ndarray) -> float:
    """Empirical entropy of the histogram times its total count: the ideal coded size in bits."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(counts[counts > 0] * np.log2(p)).sum())
