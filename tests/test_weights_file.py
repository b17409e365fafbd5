"""The .df11 container: mixed dtypes, aliases, metadata; every corruption or truncation names its tensor."""

import json
import struct

import numpy as np
import pytest
import torch

from longreach.errors import LongreachError
from longreach.weights import fileformat


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """Raw bit patterns, so NaNs and signed zeros compare exactly."""
    return tensor.contiguous().reshape(-1).view(torch.uint8)


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    embedding = (torch.randn(300, 64, generator=generator) * 0.02).to(torch.bfloat16)
    patterns = np.array([0x0000, 0x8000, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0xFFFF, 0x7F7F], dtype=np.uint16)
    special = torch.from_numpy(patterns.view(np.int16).copy())
    return {
        "embed.weight": embedding,
        "head.weight": embedding,  # tied: stored once
        "proj.weight": torch.randn(64, 48, generator=generator).to(torch.bfloat16).t(),  # not contiguous
        "special": special.view(torch.bfloat16),
        "norm.weight": torch.ones(64, dtype=torch.bfloat16),
        "scalar": torch.tensor(1.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4, dtype=torch.bfloat16),
        "inv_freq": torch.rand(8, generator=generator),
        "positions": torch.arange(5),
        "mask": torch.tensor([True, False, True]),
    }


@pytest.fixture
def written(tmp_path, tensors):
    path = tmp_path / "model.df11"
    fileformat.write(path, tensors, {"source_model": "test"}, block_size=64)
    return path


def test_round_trip_keeps_bits_dtypes_shapes_and_ties(written, tensors):
    file = fileformat.CompressedFile(written)
    assert file.metadata["source_model"] == "test" and file.metadata["version"] == fileformat.VERSION
    assert file.header["head.weight"] == {"alias": "embed.weight"}
    assert file.header["inv_freq"]["codec"] == "raw" and file.header["proj.weight"]["codec"] == "df11"
    loaded = file.tensors()
    assert list(loaded) == list(tensors)
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(bits(loaded[name]), bits(tensor)), name
    assert loaded["head.weight"].data_ptr() == loaded["embed.weight"].data_ptr()


def test_bfloat16_weights_take_about_eleven_bits(tmp_path, tensors):
    fileformat.write(tmp_path / "default.df11", tensors)  # default block size: offsets cost 0.004 bits a weight
    coded = fileformat.CompressedFile(tmp_path / "default.df11").encoded("embed.weight")
    assert coded.nbytes < 0.72 * tensors["embed.weight"].numel() * 2


def _data_start(path) -> int:
    (length,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + length


@pytest.mark.parametrize("name", ["embed.weight", "proj.weight", "special", "inv_freq", "mask"])
@pytest.mark.parametrize("section", ["first", "last"])
def test_a_flipped_data_byte_fails_naming_the_tensor(written, name, section):
    file = fileformat.CompressedFile(written)
    spans = list(file.header[name]["sections"].values())
    begin, end = spans[0] if section == "first" else spans[-1]
    data = bytearray(written.read_bytes())
    data[_data_start(written) + (begin if section == "first" else end - 1)] ^= 0x01
    written.write_bytes(bytes(data))
    file = fileformat.CompressedFile(written)
    with pytest.raises(LongreachError, match=rf"tensor '{name}': checksum mismatch \(corrupt file\)"):
        file.tensor(name)
    untouched = "norm.weight"
    assert torch.equal(bits(file.tensor(untouched)), bits(torch.ones(64, dtype=torch.bfloat16)))


def _edit_header(path, edit) -> None:
    data = path.read_bytes()
    start = _data_start(path)
    header = json.loads(data[8:start])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data[start:])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda h: h["proj.weight"].update(shape=[48, 65]), r"tensor 'proj.weight': checksum mismatch"),
        (lambda h: h["embed.weight"]["code"][0].__setitem__(1, 5), r"tensor 'embed.weight': checksum mismatch"),
        (lambda h: h["inv_freq"].update(dtype="float64"), r"tensor 'inv_freq': checksum mismatch"),
        (lambda h: h["special"].update(dtype="complex32"), r"tensor 'special': unknown dtype 'complex32'"),
        (lambda h: h["special"].update(codec="zstd"), r"tensor 'special': .*"),
        (lambda h: h.update({"head.weight": {"alias": "nowhere"}}), r"tensor 'head.weight': alias of 'nowhere'"),
    ],
)
def test_edited_header_entries_fail_naming_the_tensor(written, edit, message):
    _edit_header(written, edit)
    with pytest.raises(LongreachError, match=message):
        fileformat.CompressedFile(written).tensors()


def test_a_truncated_file_names_the_first_tensor_it_cuts(written):
    file = fileformat.CompressedFile(written)
    cut_in = "proj.weight"
    begin, _ = file.header[cut_in]["sections"]["sign_mantissa"]
    data = written.read_bytes()
    written.write_bytes(data[: _data_start(written) + begin + 3])
    file = fileformat.CompressedFile(written)
    file.tensor("embed.weight")  # before the cut: still fine
    with pytest.raises(LongreachError, match=rf"tensor '{cut_in}': its sign_mantissa data ends .* \(truncated file\)"):
        file.tensors()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"only 0 bytes"),
        (b"\x10\x00\x00", r"only 3 bytes"),
        (struct.pack("<Q", 10**6) + b"{}", r"header of 1000000 bytes runs past the end"),
        (struct.pack("<Q", 4) + b"{[}x", r"header is not valid JSON"),
        (struct.pack("<Q", 2) + b"{}", r"is not a longreach-dfloat11 file"),
    ],
)
def test_files_that_are_not_df11_say_so(tmp_path, content, message):
    path = tmp_path / "model.df11"
    path.write_bytes(content)
    with pytest.raises(LongreachError, match=message):
        fileformat.CompressedFile(path)


def test_a_future_version_is_refused(written):
    _edit_header(written, lambda h: h["__metadata__"].update(version=2))
    with pytest.raises(LongreachError, match=r"format version 2 is not supported \(only 1\)"):
        fileformat.CompressedFile(written)


def test_a_header_cut_mid_way_is_truncation(written):
    written.write_bytes(written.read_bytes()[:40])
    with pytest.raises(LongreachError, match=r"runs past the end of the file \(40 bytes\): truncated"):
        fileformat.CompressedFile(written)


def test_unsupported_dtypes_are_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(LongreachError, match=r"cannot store dtype complex64; supported: bfloat16"):
        fileformat.write(tmp_path / "x.df11", {"z": torch.zeros(2, dtype=torch.complex64)})


def test_raw_sections_are_the_tensor_bytes(written, tensors):
    file = fileformat.CompressedFile(written)
    begin, end = file.header["inv_freq"]["sections"]["raw"]
    raw = written.read_bytes()[_data_start(written) + begin : _data_start(written) + end]
    assert np.array_equal(np.frombuffer(raw, np.float32), tensors["inv_freq"].numpy())
