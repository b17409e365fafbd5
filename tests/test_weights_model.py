"""Compressed model folders: tiny-llama compress -> load -> identical logits; the compress-weights CLI."""

import pytest
import torch

import longreach.cli as cli
from longreach.errors import LongreachError
from longreach.models import load_model, resolve
from longreach.weights.model import WEIGHTS_FILE, CompressionSummary, DF11Source, compress_model


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    out = tmp_path_factory.mktemp("df11") / "tiny"
    summary = compress_model("tiny-llama", out, block_size=512)
    return out, summary


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_the_folder_resolves_as_a_compressed_model(compressed):
    out, summary = compressed
    assert resolve(str(out)) == DF11Source(str(out.resolve()))
    assert load_model(str(out), "bf16").weights.startswith("DFloat11 folder")
    assert {"config.json", WEIGHTS_FILE, "tokenizer.json"} <= {p.name for p in out.iterdir()}
    assert summary.file_bytes == (out / WEIGHTS_FILE).stat().st_size
    # all but the tied head (an alias) and the two float32 RoPE buffers (inv_freq, original_inv_freq), stored raw
    assert summary.coded_tensors == summary.tensors - 3
    assert 0.6 < summary.ratio < 0.75


def test_compressed_model_is_the_bf16_model_bit_for_bit(compressed):
    out, _ = compressed
    reference, restored = load_model("tiny-llama", "bf16"), load_model(str(out))
    assert restored.dtype == "bf16" and restored.native_context_length == reference.native_context_length
    expected = dict(reference.model.named_parameters()) | dict(reference.model.named_buffers())
    actual = dict(restored.model.named_parameters()) | dict(restored.model.named_buffers())
    assert expected.keys() == actual.keys()
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and torch.equal(
            actual[name].view(torch.uint8), tensor.view(torch.uint8)
        ), name
    ids = reference.tokenizer("The pass key is 71432. Remember it. " * 4, return_tensors="pt").input_ids
    with torch.no_grad():
        logits_a, logits_b = reference.model(ids).logits, restored.model(ids).logits
        tokens_a = reference.model.generate(ids, max_new_tokens=8, do_sample=False)
        tokens_b = restored.model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(logits_a.view(torch.int16), logits_b.view(torch.int16))
    assert torch.equal(tokens_a, tokens_b)
    assert restored.model.lm_head.weight.data_ptr() == restored.model.model.embed_tokens.weight.data_ptr()


def test_a_compressed_model_loads_in_fp32_as_an_exact_cast(compressed):
    out, _ = compressed
    wide = load_model(str(out), "fp32")
    reference = load_model("tiny-llama", "bf16").model.model.layers[0].mlp.up_proj.weight
    assert wide.model.dtype == torch.float32
    assert torch.equal(wide.model.model.layers[0].mlp.up_proj.weight, reference.float())


def test_a_corrupt_weights_file_fails_naming_the_tensor(compressed, tmp_path):
    out, _ = compressed
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    data = bytearray((copy / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (copy / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(LongreachError, match=r"tensor '[\w.]+': checksum mismatch"):
        load_model(str(copy))
    (copy / WEIGHTS_FILE).write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(LongreachError, match=r"tensor '[\w.]+': its \w+ data ends .* \(truncated file\)"):
        load_model(str(copy))


def test_compress_refuses_a_folder_in_use_and_bad_settings(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LongreachError, match="exists and is not an empty folder"):
        compress_model("tiny-llama", tmp_path)
    with pytest.raises(LongreachError, match=r"max code length must be in \[8, 20\] bits, got 30"):
        compress_model("tiny-llama", tmp_path / "new", max_code_length=30)
    assert not (tmp_path / "new").exists()


def test_cli_passes_its_arguments_to_compress_model(monkeypatch, capsys, tmp_path):
    seen = {}

    def fake(model, out, block_size, max_code_length):
        seen.update(model=model, out=out, block_size=block_size, max_code_length=max_code_length)
        return CompressionSummary(out, 10, 9, 2_000_000, 1_380_000, 1.5)

    monkeypatch.setattr(cli, "compress_model", fake)
    code, out, _ = run(["compress-weights", "smollm2-135m", str(tmp_path / "o"), "--block-size", "4096"], capsys)
    assert code == 0
    assert seen == {"model": "smollm2-135m", "out": tmp_path / "o", "block_size": 4096, "max_code_length": 12}
    assert "(0.690 of the size)" in " ".join(out.split())


def test_cli_compresses_tiny_llama_for_real(capsys, tmp_path):
    code, out, _ = run(["compress-weights", "tiny-llama", str(tmp_path / "t")], capsys)
    assert code == 0 and "DFloat11-coded" in out
    assert load_model(str(tmp_path / "t")).model.config.num_hidden_layers == 2
    code, _, err = run(["compress-weights", "tiny-llama", str(tmp_path / "t")], capsys)
    assert code == 2 and err.startswith("longreach: error:") and "not an empty folder" in err
