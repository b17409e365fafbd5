"""Cache methods: the contract over every registered one, each method's rule, and the memory they free."""

from __future__ import annotations

import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import METHODS, parse_stack
from longreach.methods.cache.base import EvictingMethod, attention_mass
from longreach.methods.cache.pyramid import Pyramid
from longreach.methods.cache.quantized import pack, quantize, unpack
from longreach.models import adapter
from longreach.tasks import parse_task

CACHE_METHODS = [name for name in METHODS.names() if METHODS.get(name).kind == "cache"]
EVICTING = [name for name in CACHE_METHODS if issubclass(METHODS.get(name), EvictingMethod)]


@pytest.fixture(scope="module")
def prompt(tiny):
    """A 600-token needle prompt with its context/question boundary."""
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 600, 0.5, seed=0, index=0)
    return sample


def read(tiny, ids: torch.Tensor, spec: str):
    """Our two-part read: all but the last token under the method's compression, then the last token.
    Returns (last-token logits, cache)."""
    stack = parse_stack(spec)
    method = stack.of_kind("cache")
    with torch.inference_mode(), stack.applied(tiny):  # per-head methods read their cache through a kernel
        with method.compressing(tiny):
            cache = adapter.forward(tiny.model, ids[:, :-1])[1]
        logits, cache = adapter.forward(tiny.model, ids[:, -1:], cache, start=ids.shape[1] - 1)
    return logits[0, -1], cache


def test_the_contract_covers_every_cache_method():
    assert set(CACHE_METHODS) >= {"streaming", "h2o", "snapkv", "pyramid", "knorm", "quantized"}


@pytest.mark.parametrize("name", EVICTING)
def test_contract_ratio_zero_is_exactly_the_baseline(tiny, prompt, name):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    with torch.inference_mode():
        one_pass_logits, _ = adapter.forward(tiny.model, ids)
        baseline = adapter.forward(tiny.model, ids[:, :-1])[1]  # the same two-part read, nothing compressed
        baseline_logits, baseline = adapter.forward(tiny.model, ids[:, -1:], baseline, start=ids.shape[1] - 1)
    logits, cache = read(tiny, ids, name)  # the bare name: ratio 0
    assert torch.equal(logits, baseline_logits[0, -1])
    for ours, theirs in zip(cache.layers, baseline.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
    torch.testing.assert_close(logits, one_pass_logits[0, -1], atol=1e-5, rtol=1e-5)
    request = Request(prompt.prompt, 24, question_offset=len(prompt.context))
    expected = Engine(tiny).generate(request, parse_stack("none"))
    for mode in ("aware", "agnostic"):
        got = Engine(tiny).generate(Request(prompt.prompt, 24, (), len(prompt.context), mode), parse_stack(name))
        assert got.text == expected.text and got.kv_cache_bytes == expected.kv_cache_bytes


@pytest.mark.parametrize("name", EVICTING)
@pytest.mark.parametrize("setting", ["compression_ratio=0.5", "compression_ratio=0.75", "budget=100"])
def test_contract_the_cache_holds_exactly_the_budget(tiny, prompt, name, setting):
    if name == "pyramid" and setting.startswith("budget"):
        with pytest.raises(LongreachError, match="pyramid: give compression_ratio"):
            parse_stack(f"{name}:{setting}")
        return
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    spec = f"{name}:{setting}"
    method = parse_stack(spec).of_kind("cache")
    n = ids.shape[1] - 1
    _, cache = read(tiny, ids, spec)
    layers = len(cache.layers)
    expected = [method.kept(n, layer, layers) + 1 for layer in range(layers)]  # + the last prompt token
    assert adapter.layer_lengths(cache) == expected
    uniform = EvictingMethod(**{k: float(v) if "." in v else int(v) for k, v in [setting.split("=")]}).kept(n)
    assert abs(sum(expected) - layers * (uniform + 1)) <= layers, "layer budgets average to the uniform one"
    per_layer_token = tiny.kv_bytes_per_token // layers
    assert adapter.cache_bytes(cache) == per_layer_token * sum(expected), "physical bytes follow the kept tokens"


@pytest.mark.parametrize("name", CACHE_METHODS)
@pytest.mark.parametrize("mode", ["aware", "agnostic"])
def test_contract_decoding_64_tokens_after_compression(tiny, prompt, name, mode):
    spec = f"{name}:compression_ratio=0.5" if name in EVICTING else name
    request = Request(prompt.prompt, 64, (), len(prompt.context), mode)
    generation = Engine(tiny).generate(request, parse_stack(spec))
    assert generation.new_tokens == 64 and generation.decode_steps == 63
    full = Engine(tiny).generate(request, parse_stack("none"))
    assert generation.compressed_kv_bytes < 0.6 * full.compressed_kv_bytes
    if name in EVICTING:  # the rest of the prompt and 63 decoded tokens are appended to the compressed cache
        n = generation.prompt_tokens
        split = n - 1 if mode == "aware" else len(tokens.encode(tiny.tokenizer, prompt.context))
        grown = tiny.kv_bytes_per_token * (n - split + 63)
        assert generation.kv_cache_bytes == generation.compressed_kv_bytes + grown
    else:
        assert generation.kv_cache_bytes < 0.6 * full.kv_cache_bytes


def test_ratios_remove_that_fraction_of_the_physical_bytes(tiny, prompt):
    request = Request(prompt.prompt, 4, (), len(prompt.context), "agnostic")
    full = Engine(tiny).generate(request, parse_stack("none")).compressed_kv_bytes
    for ratio in (0.5, 0.75):
        for name in ("snapkv", "streaming", "knorm", "h2o", "pyramid"):
            got = Engine(tiny).generate(request, parse_stack(f"{name}:{ratio}")).compressed_kv_bytes
            assert got / full == pytest.approx(1 - ratio, rel=0.02), name


def test_streaming_keeps_the_sinks_and_the_most_recent_tokens(tiny, prompt):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    _, cache = read(tiny, ids, "streaming:budget=50:sinks=4")
    with torch.inference_mode():
        _, full = adapter.forward(tiny.model, ids[:, :-1])
    n = ids.shape[1] - 1
    kept = list(range(4)) + list(range(n - 46, n))
    for ours, theirs in zip(cache.layers, full.layers, strict=True):
        assert torch.equal(ours.keys[:, :, :50], theirs.keys[:, :, kept])


def test_knorm_keeps_the_lowest_norm_keys(tiny, prompt):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    _, cache = read(tiny, ids, "knorm:budget=80")
    with torch.inference_mode():
        _, full = adapter.forward(tiny.model, ids[:, :-1])
    for ours, theirs in zip(cache.layers, full.layers, strict=True):
        norms = theirs.keys.norm(dim=-1)  # (b, k, n)
        threshold = norms.sort(dim=-1).values[..., 79:80]
        kept = ours.keys[:, :, :-1].norm(dim=-1)
        assert (kept <= threshold + 1e-6).all()


def test_attention_mass_is_the_column_sum_of_causal_attention(tiny, prompt):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])[:, :300]
    seen = []
    with torch.inference_mode():
        with adapter.after_attention(tiny.model, lambda observed, cache: seen.append((observed, cache))):
            adapter.forward(tiny.model, ids)
        observed, cache = seen[1]
        keys, _ = adapter.layer_kv(cache, 1)
        mass = attention_mass(observed, keys, block=64)
        queries = observed.queries()
        full_keys = keys.repeat_interleave(queries.shape[1] // keys.shape[1], dim=1)
        scores = (queries @ full_keys.transpose(-1, -2)) * observed.module.scaling
        scores = scores.masked_fill(torch.ones(300, 300, dtype=torch.bool).triu(1), float("-inf"))
        expected = scores.softmax(dim=-1).sum(dim=-2)
    torch.testing.assert_close(mass, expected, atol=1e-4, rtol=1e-4)
    assert mass.sum(dim=-1).allclose(torch.full_like(mass[..., 0], 300.0)), "each query's attention sums to 1"


def test_h2o_reserves_its_recent_window(tiny, prompt):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    _, cache = read(tiny, ids, "h2o:budget=100:recent=0.4")
    with torch.inference_mode():
        _, full = adapter.forward(tiny.model, ids[:, :-1])
    assert torch.equal(cache.layers[1].keys[:, :, 60:100], full.layers[1].keys[:, :, -40:])


def test_pyramid_budgets_fall_with_depth_and_average_to_the_ratio():
    method = Pyramid(compression_ratio=0.5)
    budgets = [method.kept(8192, layer, 30) for layer in range(30)]
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > 2 * budgets[-1]
    assert sum(budgets) / 30 == pytest.approx(4096, abs=1)
    assert Pyramid(compression_ratio=0.5).kept(100, 0, 30) == 50, "too short for a pyramid: the uniform count"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("snapkv:compression_ratio=1", r"compression_ratio must be in \[0, 1\)"),
        ("h2o:compression_ratio=-0.1", r"compression_ratio must be in \[0, 1\)"),
        ("knorm:compression_ratio=0.5:budget=10", "not both"),
        ("snapkv:kernel=4", "kernel must be odd"),
        ("h2o:recent=2", r"recent must be in \[0, 1\]"),
        ("quantized:bits=2", "bits must be one of 8, 4"),
        ("selfextend+snapkv", "snapkv cannot be stacked with selfextend"),
        ("snapkv+knorm", "at most one cache method"),
    ],
)
def test_bad_cache_specs_fail_with_the_reason(spec, message):
    with pytest.raises(LongreachError, match=message):
        parse_stack(spec)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_error_is_within_half_a_step(bits):
    torch.manual_seed(0)
    x = torch.randn(1, 2, 64, 16) * torch.linspace(0.1, 5, 16)  # channels of very different ranges
    codes, scale, zero = quantize(x, dim=2, bits=bits)
    assert torch.equal(unpack(pack(codes, bits), bits), codes)
    restored = codes.float() * scale + zero
    assert ((restored - x).abs() <= scale / 2 + 1e-5).all()
    assert pack(codes, bits).dtype == torch.uint8 and pack(codes, bits).shape[-1] == 16 * bits // 8


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_cache_keeps_every_token_in_fewer_physical_bytes(tiny, prompt, bits):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    with torch.inference_mode():
        baseline_logits, baseline = adapter.forward(tiny.model, ids)
    logits, cache = read(tiny, ids, f"quantized:bits={bits}:group=32")
    n = ids.shape[1]
    assert cache.get_seq_length() == n
    config = tiny.model.config
    quantized, residual = n - 1 - (n - 1) % 32, (n - 1) % 32 + 1
    heads, d, layers = config.num_key_value_heads, config.head_dim, config.num_hidden_layers
    codes = 2 * quantized * heads * d * bits // 8
    scales = 2 * 4 * heads * (quantized // 32 * d + quantized)  # key (scale, zero) per group+channel; value per token
    expected = layers * (codes + scales + 2 * residual * heads * d * 4)
    assert adapter.cache_bytes(cache) == expected
    assert adapter.cache_bytes(cache) < (0.4 if bits == 8 else 0.3) * adapter.cache_bytes(baseline)
    similarity = torch.nn.functional.cosine_similarity(logits, baseline_logits[0, -1], dim=0)
    assert similarity > (0.999 if bits == 8 else 0.98)


def test_reading_a_question_on_layers_of_different_lengths_is_exact(tiny, prompt):
    """After pyramid compression the layers differ in length; a multi-token read equals one token at a time."""
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt.prompt)])
    split = len(tokens.encode(tiny.tokenizer, prompt.context))
    method = parse_stack("pyramid:compression_ratio=0.5:window=8").of_kind("cache")
    with torch.inference_mode():
        with method.compressing(tiny):
            cache = adapter.forward(tiny.model, ids[:, :split])[1]
        assert len(set(adapter.layer_lengths(cache))) > 1
        stepwise = adapter.clone_cache(cache)
        logits, _ = adapter.forward(tiny.model, ids[:, split:], cache, start=split, logits_to_keep=3)
        expected = []
        for offset in range(split, ids.shape[1]):
            step, stepwise = adapter.forward(tiny.model, ids[:, offset : offset + 1], stepwise, start=offset)
            expected.append(step)
    torch.testing.assert_close(logits, torch.cat(expected, dim=1)[:, -3:])
