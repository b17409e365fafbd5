"""The DFloat11 codec: Huffman codes, bit-exact round trips over every bit pattern, corrupt streams."""

import heapq

import numpy as np
import pytest
import torch

from longreach.errors import LongreachError
from longreach.weights import codec, huffman


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 values -> uint16 bfloat16 bit patterns (torch's round-to-nearest-even cast)."""
    return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def edge_patterns() -> np.ndarray:
    """Zeros, subnormals, the smallest/largest normals, ±inf, quiet and signalling NaNs, both signs."""
    patterns = [0x0000, 0x8000, 0x0001, 0x807F, 0x0040, 0x0080, 0x8080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF80]
    patterns += [0x7F80, 0xFF80, 0x7FC0, 0xFFC0, 0x7F81, 0xFFFF, 0x7FFF]
    return np.array(patterns, dtype=np.uint16)


def huffman_cost(counts: np.ndarray) -> int:
    """Bits of an unconstrained Huffman code (classic merge of the two lightest): the optimum."""
    heap = [int(c) for c in counts if c > 0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@pytest.mark.parametrize("seed", range(5))
def test_package_merge_is_optimal_and_respects_the_cap(seed):
    rng = np.random.default_rng(seed)
    counts = np.zeros(256, np.int64)
    counts[rng.choice(256, 40, replace=False)] = (rng.pareto(0.7, 40) * 10 + 1).astype(np.int64)
    loose = huffman.code_lengths(counts, 20).astype(np.int64)
    assert (loose * counts).sum() == huffman_cost(counts), "a loose cap must give a Huffman-optimal code"
    capped = huffman.code_lengths(counts, 8).astype(np.int64)
    assert capped.max() <= 8 and (capped[counts > 0] > 0).all() and (capped[counts == 0] == 0).all()
    assert np.sum(2.0 ** -capped[capped > 0]) == 1.0, "complete prefix code"
    assert (capped * counts).sum() >= (loose * counts).sum()


def test_canonical_codes_are_prefix_free_and_the_table_inverts_them():
    counts = np.zeros(256, np.int64)
    counts[[3, 120, 121, 122, 200]] = [1, 50, 30, 15, 4]
    lengths = huffman.code_lengths(counts, 12)
    codes = huffman.canonical_codes(lengths)
    words = {format(int(codes[s]), f"0{lengths[s]}b") for s in np.flatnonzero(lengths)}
    assert len(words) == 5 and not any(a != b and b.startswith(a) for a in words for b in words)
    table = huffman.decode_table(lengths)
    width = int(lengths.max())
    for symbol in np.flatnonzero(lengths):
        entry = table[int(codes[symbol]) << (width - lengths[symbol])]
        assert entry & 0xFF == symbol and entry >> huffman.LENGTH_SHIFT == lengths[symbol]


def test_multi_symbol_entries_match_three_single_lookups():
    counts = np.zeros(256, np.int64)
    counts[[118, 119, 120, 121, 122, 7]] = [400, 300, 200, 60, 30, 1]
    table = huffman.decode_table(huffman.code_lengths(counts, 10))
    multi = huffman.multi_table(table).astype(np.int64)
    width = int(np.log2(table.size))
    for window in range(table.size):
        expected, used = [], 0
        while len(expected) < 3:
            entry = int(table[(window << used) & (table.size - 1)])
            if entry >> 8 == 0 or used + (entry >> 8) > width:
                break
            expected.append(entry & 0xFF)
            used += entry >> 8
        entry = int(multi[window])
        assert entry >> 30 == len(expected) and (entry >> 24) & 0x3F == used
        assert [(entry >> (8 * k)) & 0xFF for k in range(len(expected))] == expected


def test_entropy_of_a_uniform_histogram():
    counts = np.zeros(256, np.int64)
    counts[:4] = 10
    assert huffman.entropy_bits(counts) == pytest.approx(80.0)


CASES = {
    "every_uint16_pattern": np.arange(2**16, dtype=np.uint16),
    "edge_patterns": np.tile(edge_patterns(), 100),
    "normal_weights": bf16_bits(np.random.default_rng(0).standard_normal(200_001) * 0.02),
    "subnormals": np.random.default_rng(1).integers(0, 0x80, 5000, dtype=np.uint16) | 0x8000,
    "zeros": np.zeros(3000, np.uint16),
    "one_exponent_both_signs": np.array([0x3F80, 0xBF85] * 50, np.uint16),
    "single_weight": np.array([0x7FC0], np.uint16),
    "empty": np.zeros(0, np.uint16),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("block_size", [1, 7, 4096, codec.DEFAULT_BLOCK_SIZE])
def test_round_trip_is_bit_exact(name, block_size):
    bits = CASES[name]
    encoded = codec.encode(bits, block_size=block_size)
    assert encoded.offsets.size == -(-bits.size // block_size) + 1
    decoded = codec.decode(encoded)
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, bits)


def test_real_weights_shrink_to_about_eleven_bits(tiny):
    weight = tiny.model.model.layers[0].mlp.down_proj.weight.detach().to(torch.bfloat16)
    bits = weight.contiguous().view(torch.int16).numpy().view(np.uint16).reshape(-1)
    encoded = codec.encode(bits, block_size=256)
    assert np.array_equal(codec.decode(encoded), bits)
    exponents, _ = codec.split(bits)
    entropy = huffman.entropy_bits(np.bincount(exponents, minlength=256))
    assert entropy <= encoded.total_bits < entropy + bits.size * 0.1, "Huffman is within 0.1 bit of the entropy"
    assert encoded.nbytes / bits.nbytes < 0.75


def test_lone_exponent_costs_no_stream_bits():
    encoded = codec.encode(CASES["zeros"])
    assert encoded.total_bits == 0 and encoded.stream.size == 0 and encoded.code.tolist() == [[0, 0]]


def test_code_length_cap_holds_and_still_round_trips():
    bits = CASES["every_uint16_pattern"]
    encoded = codec.encode(np.concatenate([bits, np.full(10**5, 0x3F80, np.uint16)]), max_code_length=9)
    assert encoded.code[:, 1].max() == 9
    assert np.array_equal(codec.decode(encoded)[: bits.size], bits)


@pytest.mark.parametrize(("block_size", "max_code_length", "message"), [(0, 12, "block size"), (64, 7, "max code")])
def test_bad_settings_name_the_valid_range(block_size, max_code_length, message):
    with pytest.raises(LongreachError, match=message):
        codec.encode(CASES["zeros"], block_size=block_size, max_code_length=max_code_length)


def _with(encoded: codec.EncodedTensor, **changes) -> codec.EncodedTensor:
    fields = {name: getattr(encoded, name) for name in codec.EncodedTensor.__dataclass_fields__}
    return codec.EncodedTensor(**{**fields, **changes})


def test_flipped_stream_bits_are_caught_by_the_block_offsets():
    encoded = codec.encode(CASES["normal_weights"], block_size=1024)
    caught = 0
    for byte in range(0, encoded.stream.size, 997):
        stream = encoded.stream.copy()
        stream[byte] ^= 0x10
        try:
            decoded = codec.decode(_with(encoded, stream=stream), what="tensor 'w'")
        except LongreachError as exc:
            assert "tensor 'w': corrupt exponent stream" in str(exc)
            caught += 1
        else:  # a flip that keeps every block's length decodes to other values; the file checksum catches it
            assert not np.array_equal(decoded, CASES["normal_weights"])
    assert caught > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: {"sign_mantissa": e.sign_mantissa[:-1]}, "sign/mantissa bytes"),
        (lambda e: {"offsets": e.offsets[:-1]}, "block offsets for"),
        (lambda e: {"offsets": e.offsets[::-1].copy()}, "must rise from 0"),
        (lambda e: {"stream": e.stream[:-1]}, "must rise from 0|stream bytes"),
        (lambda e: {"code": np.array([[1, 1], [2, 1], [3, 1]])}, "not a prefix code"),
        (lambda e: {"code": np.array([[1, 0], [2, 3]])}, "code lengths must be"),
        (lambda e: {"code": np.array([[300, 1], [2, 1]])}, "distinct bytes"),
        (lambda e: {"code": np.array([[1, 25], [2, 1]])}, "exceeds 20 bits"),
    ],
)
def test_inconsistent_parts_fail_before_decoding(change, message):
    encoded = codec.encode(CASES["normal_weights"], block_size=1024)
    with pytest.raises(LongreachError, match=rf"^tensor 'w': .*({message})"):
        codec.decode(_with(encoded, **change(encoded)), what="tensor 'w'")
