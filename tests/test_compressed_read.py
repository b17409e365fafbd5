"""How a cache method reads: a forward that only fills the cache, the queries scoring reuses from the attention
call, and compressing while reading (``read_chunk``).

Invariants: filling the cache without the last layer's output leaves the cache a full forward leaves; scoring with
the attention call's queries changes nothing (same caches, same answers); a chunk as long
as the read is the one-shot read; streaming keeps the one-shot positions and knorm the one-shot norms (layer 0,
whose keys do not depend on the context); no layer ever holds more than its budget plus a chunk; the methods that
do not define a chunked read refuse it with the reason.
"""

from __future__ import annotations

import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.methods.cache import _chunked
from longreach.methods.cache.base import EvictingMethod
from longreach.models import adapter
from longreach.tasks import parse_task

CHUNKED = ("streaming", "knorm", "snapkv", "pyramid")


@pytest.fixture(scope="module")
def sample(tiny):
    return parse_task("niah_single_2").task.generate(tiny.tokenizer, 600, 0.5, seed=0, index=0)


@pytest.fixture(scope="module")
def ids(tiny, sample) -> torch.Tensor:
    return torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])


def _one_shot(tiny, ids: torch.Tensor, spec: str):
    """(uncompressed cache of the read, each layer's kept indices by the one-shot rule)."""
    method = parse_stack(spec).of_kind("cache")
    inputs = []
    with torch.inference_mode():
        with adapter.after_attention(tiny.model, lambda observed, _cache: inputs.append(observed)):
            full = adapter.forward(tiny.model, ids)[1]
        kept = [method.select(o, *adapter.layer_kv(full, o.layer), len(inputs)) for o in inputs]
    return full, kept


@pytest.mark.parametrize("spec", ["none", "snapkv:compression_ratio=0.5", "adakv:compression_ratio=0.5"])
def test_filling_the_cache_only_leaves_the_cache_a_full_forward_leaves(tiny, ids, spec):
    stack = parse_stack(spec)
    seen = []
    with torch.inference_mode(), stack.applied(tiny):
        full = adapter.forward(tiny.model, ids)[1]
        with adapter.after_attention(tiny.model, lambda observed, _cache: seen.append(observed.layer)):
            filled = adapter.fill_cache(tiny.model, ids)
        cache, split = adapter.forward(tiny.model, ids[:, :100])[1], adapter.forward(tiny.model, ids[:, :100])[1]
        adapter.fill_cache(tiny.model, ids[:, 100:], cache, start=100)  # continuing a cache at explicit positions
        adapter.forward(tiny.model, ids[:, 100:], split, start=100)
    assert seen == list(range(len(full.layers))), "every layer's observers still run"
    for layer, (ours, theirs) in enumerate(zip(filled.layers, full.layers, strict=True)):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)
        assert torch.equal(cache.layers[layer].keys, split.layers[layer].keys)


@pytest.mark.parametrize("spec", ["snapkv:compression_ratio=0.5", "h2o:compression_ratio=0.5", "expected:0.5"])
def test_scoring_with_the_attention_calls_queries_changes_nothing(tiny, ids, spec):
    method = parse_stack(spec).of_kind("cache")
    with torch.inference_mode():
        reused = method.read(tiny, ids)  # compressing: the layer inputs carry the call's queries
        recomputed = adapter.empty_cache(tiny.model)
        n_layers = len(adapter.attention_modules(tiny.model))

        def compress(observed, cache):
            assert observed.query is None  # projected again from the hidden states
            method.compress_layer(observed, cache, n_layers)

        with adapter.after_attention(tiny.model, compress):
            adapter.forward(tiny.model, ids, recomputed)
    for ours, theirs in zip(reused.layers, recomputed.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


@pytest.mark.parametrize("mode", ["aware", "agnostic"])
def test_the_read_optimisations_change_no_answer(tiny, sample, mode, monkeypatch):
    """Before issue 18 a compressed read was a full forward whose observers projected the queries again; the
    answers (greedy tokens) and the compressed bytes are the same with the cache filled only and the call's
    queries reused."""
    specs = [f"{name}:compression_ratio=0.5" for name in ("snapkv", "pyramid", "streaming", "knorm", "h2o", "expected")]
    request = Request(sample.prompt, 24, (), len(sample.context), mode)
    after = [Engine(tiny).generate(request, parse_stack(spec)) for spec in specs]

    def earlier(self, loaded, ids, question=None):
        n_layers = len(adapter.attention_modules(loaded.model))

        def hook(observed, cache):
            observed.question = question
            self.compress_layer(observed, cache, n_layers)

        with adapter.after_attention(loaded.model, hook):
            return adapter.forward(loaded.model, ids)[1]

    monkeypatch.setattr(EvictingMethod, "read", earlier)
    before = [Engine(tiny).generate(request, parse_stack(spec)) for spec in specs]
    for spec, old, new in zip(specs, before, after, strict=True):
        assert (old.text, old.compressed_kv_bytes) == (new.text, new.compressed_kv_bytes), spec


def test_the_queries_kept_are_those_the_hidden_states_give(tiny, ids):
    seen = []
    with torch.inference_mode():
        plain = adapter.forward(tiny.model, ids, logits_to_keep=ids.shape[1])[0]
        with adapter.after_attention(tiny.model, lambda observed, _cache: seen.append(observed), with_queries=True):
            hooked = adapter.forward(tiny.model, ids, logits_to_keep=ids.shape[1])[0]
        for observed in seen:
            kept = observed.queries(last=7)
            observed.query = None
            # equal up to float rounding: projecting 7 rows or all rows may take different BLAS paths (threads)
            torch.testing.assert_close(kept, observed.queries(last=7), rtol=1e-5, atol=1e-6)
    assert torch.equal(plain, hooked), "the attention call's own steps give the model's output"


@pytest.mark.parametrize("name", CHUNKED)
def test_a_chunk_as_long_as_the_read_is_the_one_shot_read(tiny, ids, name):
    one = parse_stack(f"{name}:compression_ratio=0.5").of_kind("cache")
    whole = parse_stack(f"{name}:compression_ratio=0.5:read_chunk={ids.shape[1]}").of_kind("cache")
    with torch.inference_mode():
        expected, got = one.read(tiny, ids), whole.read(tiny, ids)
    for ours, theirs in zip(got.layers, expected.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys)


def test_streaming_in_chunks_keeps_the_one_shot_positions(tiny, ids):
    """Layer 0's keys depend on the token and its position only, so the kept keys name the kept positions."""
    spec = "streaming:compression_ratio=0.5:sinks=4"
    full, kept = _one_shot(tiny, ids, spec)
    with torch.inference_mode():
        cache = parse_stack(f"{spec}:read_chunk=64").of_kind("cache").read(tiny, ids)
    assert adapter.layer_lengths(cache) == [kept[0].shape[-1]] * len(cache.layers)
    keys = full.layers[0].keys
    expected = keys.gather(2, kept[0].unsqueeze(-1).expand(-1, -1, -1, keys.shape[-1]))
    torch.testing.assert_close(cache.layers[0].keys, expected, atol=1e-5, rtol=1e-5)


def test_knorm_in_chunks_keeps_the_one_shot_norms(tiny, ids):
    """The lowest-norm keys of (kept so far + chunk) are the lowest of the whole read (ties aside: the same token at
    two positions has the same norm, so compare the norms kept, not the positions)."""
    spec = "knorm:budget=100"
    full, kept = _one_shot(tiny, ids, spec)
    with torch.inference_mode():
        cache = parse_stack(f"{spec}:read_chunk=64").of_kind("cache").read(tiny, ids)
    norms = full.layers[0].keys.norm(dim=-1).gather(2, kept[0]).sort(dim=-1).values
    torch.testing.assert_close(cache.layers[0].keys.norm(dim=-1).sort(dim=-1).values, norms, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CHUNKED)
def test_no_layer_holds_more_than_its_budget_and_a_chunk(tiny, ids, name, monkeypatch):
    held = []
    append = _chunked._Slots.append

    def watched(self, key, value):
        keys, values = append(self, key, value)
        held.append(keys.shape[2])
        return keys, values

    monkeypatch.setattr(_chunked._Slots, "append", watched)
    method = parse_stack(f"{name}:compression_ratio=0.75:read_chunk=50").of_kind("cache")
    n, n_layers = ids.shape[1], len(adapter.attention_modules(tiny.model))
    with torch.inference_mode():
        cache = method.read(tiny, ids)
    budgets = [method.kept(n, layer, n_layers) for layer in range(n_layers)]
    assert adapter.layer_lengths(cache) == budgets
    assert max(held) <= max(budgets) + 50 and len(held) == n_layers * -(-n // 50)


@pytest.mark.parametrize("mode", ["aware", "agnostic"])
@pytest.mark.parametrize("name", CHUNKED)
def test_the_engine_answers_after_a_chunked_read_with_or_without_prefix_reuse(tiny, sample, name, mode):
    request = Request(sample.prompt, 8, (), len(sample.context), mode)
    stack = parse_stack(f"{name}:compression_ratio=0.5:read_chunk=128")
    alone = Engine(tiny).generate(request, stack)
    shared = Engine(tiny, reuse_prefix=True)
    shared.generate(request, parse_stack("none"))  # a kept read that a chunked read must not use
    again = shared.generate(request, stack)
    assert (alone.text, alone.compressed_kv_bytes) == (again.text, again.compressed_kv_bytes)
    assert again.reused_tokens == 0 and alone.new_tokens > 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("h2o:compression_ratio=0.5:read_chunk=64", "not defined for this method"),
        ("adakv:compression_ratio=0.5:read_chunk=64", "not defined for this method"),
        ("chunkkv:compression_ratio=0.5:read_chunk=64", "not defined for this method"),
        ("snapkv:compression_ratio=0.5:read_chunk=64:bits=4", "quantized storage"),
        ("knorm:compression_ratio=0.5:read_chunk=-1", "read_chunk must be >= 0"),
    ],
)
def test_methods_without_a_chunked_read_refuse_it(spec, message):
    with pytest.raises(LongreachError, match=message):
        parse_stack(spec)
