"""Issue 18's eviction methods: question-only voting, Ada-KV head budgets, ChunkKV, DuoAttention-style heads,
Expected Attention, and eviction composed with int4/int8 quantization. One oracle or invariant each."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.methods.cache._ragged import RaggedStorage
from longreach.methods.cache.adakv import headwise_topk
from longreach.methods.cache.base import window_attention
from longreach.methods.cache.chunkkv import chunk_selection
from longreach.methods.cache.duo import Duo, duo_allocation
from longreach.methods.cache.expected import average_rotation, expected_scores, prerope_queries
from longreach.methods.cache.snapkv import SnapKV, snapkv_scores
from longreach.models import adapter
from longreach.tasks import parse_task


@pytest.fixture(autouse=True)
def _inference():
    with torch.inference_mode():  # the layer inputs were made in inference mode
        yield


@pytest.fixture(scope="module")
def sample(tiny):
    return parse_task("niah_single_2").task.generate(tiny.tokenizer, 600, 0.5, seed=0, index=0)


@pytest.fixture(scope="module")
def layers(tiny, sample):
    """Every layer's input and the uncompressed cache of the prompt but its last token, the question marked."""
    ids = torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])[:, :-1]
    inputs = []
    with torch.inference_mode():
        with adapter.after_attention(tiny.model, lambda observed, _cache: inputs.append(observed)):
            cache = adapter.forward(tiny.model, ids)[1]
    question = len(tokens.encode(tiny.tokenizer, sample.context))
    return [dataclasses.replace(observed, question=question) for observed in inputs], cache


def _read(tiny, ids: torch.Tensor, spec: str, question: int | None = None):
    """All but the last token compressed under ``spec`` (question marked), then the last: (logits, cache)."""
    stack = parse_stack(spec)
    with torch.inference_mode(), stack.applied(tiny):
        with stack.of_kind("cache").compressing(tiny, question):
            cache = adapter.forward(tiny.model, ids[:, :-1])[1]
        logits, cache = adapter.forward(tiny.model, ids[:, -1:], cache, start=ids.shape[1] - 1)
    return logits[0, -1], cache


# --- the question's start reaches the cache method -------------------------------------------------------------


@pytest.mark.parametrize("reuse", [False, True])
def test_the_engine_marks_where_the_question_starts(tiny, sample, monkeypatch, reuse):
    seen = []
    original = SnapKV.scores

    def spy(self, observed, keys, values):
        seen.append(observed.question)
        return original(self, observed, keys, values)

    monkeypatch.setattr(SnapKV, "scores", spy)
    stack = parse_stack("snapkv:compression_ratio=0.5:voters=question")
    context_tokens = len(tokens.encode(tiny.tokenizer, sample.context))
    for mode, expected in (("aware", context_tokens), ("agnostic", None)):
        seen.clear()
        request = Request(sample.prompt, 2, (), sample.question_offset, mode)
        Engine(tiny, reuse_prefix=reuse).generate(request, stack)
        assert seen == [expected] * 2, mode


# --- question-only voting, max over the group ------------------------------------------------------------------


def test_question_voting_is_snapkv_whose_window_is_the_question(layers):
    inputs, cache = layers
    observed = inputs[1]
    keys, _ = adapter.layer_kv(cache, 1)
    n, question = keys.shape[2], observed.question
    ours = snapkv_scores(observed, keys, 64, 7, "max", voters="question")
    assert torch.equal(ours, snapkv_scores(observed, keys, n - question, 7, "max"))
    assert (ours[..., question:] > ours[..., :question].max()).all(), "the question's tokens are kept first"
    agnostic = dataclasses.replace(observed, question=None)
    assert torch.equal(
        snapkv_scores(agnostic, keys, 64, 7, "max", voters="question"), snapkv_scores(agnostic, keys, 64, 7, "max")
    )


def test_group_max_takes_the_max_over_the_query_heads(layers):
    inputs, cache = layers
    observed = inputs[0]
    keys, _ = adapter.layer_kv(cache, 0)
    n, w = keys.shape[2], 16
    votes = window_attention(observed, keys, w)[..., : n - w].mean(dim=-2)  # (1, h, n - w)
    expected = torch.stack([votes[:, 0:2].max(dim=1).values, votes[:, 2:4].max(dim=1).values], dim=1)  # 2 per KV head
    got = snapkv_scores(observed, keys, w, 1, "avg", group="max")
    torch.testing.assert_close(got[..., : n - w], expected)


# --- Ada-KV ------------------------------------------------------------------------------------------------------


def test_headwise_topk_keeps_the_total_the_floor_and_the_global_best():
    torch.manual_seed(0)
    scores = torch.rand(1, 3, 100)
    scores[:, 0] *= 10  # head 0's scores dominate: it takes most of the budget
    kept = headwise_topk(scores, 40, 0.25)
    assert sum(len(k) for k in kept) == 120 and all(len(k) >= 10 for k in kept)
    assert len(kept[0]) > 40 > len(kept[1])
    assert all(torch.equal(k, k.sort().values) for k in kept)
    floor = [scores[0, h].topk(10).indices for h in range(3)]
    assert all(set(f.tolist()) <= set(k.tolist()) for f, k in zip(floor, kept, strict=True))
    uniform = headwise_topk(scores, 40, 1.0)
    assert all(torch.equal(k, scores[0, h].topk(40).indices.sort().values) for h, k in enumerate(uniform))


def test_adakv_per_head_cache_is_exact_and_holds_the_budget(tiny, sample):
    """floor=1: every head keeps its own top kept, which is SnapKV's choice; the per-head storage and kernel then
    give SnapKV's dense logits. At floor 0.2 the heads differ and hold exactly the layer's total in bytes."""
    ids = torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])
    dense, _ = _read(tiny, ids, "snapkv:compression_ratio=0.5:window=16")
    ragged, cache = _read(tiny, ids, "adakv:compression_ratio=0.5:window=16:floor=1")
    assert all(isinstance(layer, RaggedStorage) for layer in cache.layers)
    torch.testing.assert_close(ragged, dense, atol=1e-4, rtol=1e-4)
    _, cache = _read(tiny, ids, "adakv:compression_ratio=0.5:window=16")
    n = ids.shape[1] - 1
    kept = int(n * 0.5)
    lengths = [layer.head_lengths() for layer in cache.layers]
    assert all(sum(heads) == 2 * (kept + 1) for heads in lengths), "k x kept, plus the last prompt token per head"
    assert any(len(set(heads)) > 1 for heads in lengths), "budgets differ between heads"
    assert adapter.cache_bytes(cache) == tiny.kv_bytes_per_token // 2 * sum(sum(h) for h in lengths) // 2


def test_per_head_budgets_refuse_quantization():
    with pytest.raises(LongreachError, match="bits=16"):
        parse_stack("adakv:compression_ratio=0.5:bits=4")


# --- ChunkKV ---------------------------------------------------------------------------------------------------


def test_chunkkv_keeps_whole_chunks_by_mean_score_the_same_in_every_head():
    torch.manual_seed(0)
    scores = torch.rand(1, 2, 95)  # 10 chunks of 10, the last of 5
    kept = chunk_selection(scores, 47, 10)
    assert kept.shape == (1, 2, 47) and torch.equal(kept[:, 0], kept[:, 1])
    means = torch.stack([scores[0].sum(0)[c * 10 : c * 10 + 10].mean() for c in range(10)])
    top = means.argsort(descending=True)[:4].tolist()  # 4 whole chunks = 40 tokens (the 5-token chunk may be one)
    chosen = set(kept[0, 0].tolist())
    for chunk in top:
        assert set(range(chunk * 10, min(chunk * 10 + 10, 95))) <= chosen
    partial = [c for c in range(10) if 0 < len(chosen & set(range(c * 10, c * 10 + 10))) < min(10, 95 - c * 10)]
    assert len(partial) <= 1, "at most one chunk is cut, to meet the budget exactly"


def test_chunkkv_keeps_the_voters_chunks(tiny, sample):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])
    _, cache = _read(tiny, ids, "chunkkv:compression_ratio=0.5:window=16:chunk=10")
    with torch.inference_mode():
        _, full = adapter.forward(tiny.model, ids[:, :-1])
    assert torch.equal(cache.layers[1].keys[:, :, -17:-1], full.layers[1].keys[:, :, -16:])


# --- DuoAttention-style ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "kept", "heads", "window"), [(4096, 2048, 3, 320), (600, 300, 2, 36), (100, 10, 4, 50)])
def test_duo_allocation_spends_exactly_the_budget(n, kept, heads, window):
    retrieval, streaming = duo_allocation(n, kept, heads, window)
    assert retrieval * n + sum(streaming) == heads * kept and retrieval + len(streaming) == heads
    assert all(s >= min(window, kept) for s in streaming)


def test_duo_retrieval_heads_keep_everything_streaming_heads_sinks_and_recent(tiny, layers):
    inputs, cache = layers
    method = Duo(compression_ratio=0.25, sinks=4, recent=32, window=16)
    observed = inputs[1]
    keys, _ = adapter.layer_kv(cache, 1)
    n = keys.shape[2]
    kept = method.head_indices(observed, keys, 2)
    ranking = method.head_ranking(observed, keys)[0]
    retrieval = int(ranking.argmax())
    assert torch.equal(kept[retrieval], torch.arange(n)), "the head looking furthest back keeps everything"
    streaming = kept[1 - retrieval]
    m = len(streaming)
    assert len(kept[retrieval]) + m == 2 * int(n * 0.75)
    assert torch.equal(streaming, torch.cat((torch.arange(4), torch.arange(n - (m - 4), n))))


# --- Expected Attention ----------------------------------------------------------------------------------------


def test_expected_rotation_of_one_future_position_is_rope_there(layers):
    inputs, _ = layers
    observed = inputs[0]
    n = observed.hidden.shape[1]
    rotation = average_rotation(observed, n, 1)
    x = torch.randn(1, 4, 1, 16)
    cos, sin = observed.rotary(x, torch.tensor([[n]]))
    torch.testing.assert_close(x @ rotation.T, adapter.apply_rope(x, cos, sin), atol=1e-5, rtol=1e-5)


def test_expected_scores_match_sampled_gaussian_queries(layers):
    """The closed form exp(mu.k/sqrt d + k S k / 2d) is E[exp(q.k/sqrt d)] for q ~ N(mu, S): sample the queries."""
    inputs, cache = layers
    observed = inputs[1]
    keys, values = adapter.layer_kv(cache, 1)
    sinks = 4
    ours = expected_scores(observed, keys, values, 64, sinks, covariance=True, vnorm=False)[..., sinks:]
    queries = prerope_queries(observed, sinks).float()
    rotation = average_rotation(observed, observed.hidden.shape[1], 64)
    mean = queries.mean(dim=2) @ rotation.T  # (1, h, d)
    centered = queries - queries.mean(dim=2, keepdim=True)
    cov = rotation @ (centered.transpose(-1, -2) @ centered / queries.shape[2]) @ rotation.T
    torch.manual_seed(0)
    estimates = []
    for head in range(4):
        gaussian = torch.distributions.MultivariateNormal(mean[0, head], cov[0, head] + 1e-5 * torch.eye(16))
        draws = gaussian.sample((20000,))
        logits = draws @ keys[0, head // 2, sinks:].float().T / 4.0  # sqrt(16)
        weights = logits.exp().mean(dim=0)
        estimates.append(weights / weights.sum())
    sampled = torch.stack(estimates).reshape(1, 2, 2, -1).mean(dim=2)
    torch.testing.assert_close(ours, sampled, atol=2e-3, rtol=0.1)


def test_expected_keeps_the_sinks(tiny, sample):
    ids = torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])
    _, cache = _read(tiny, ids, "expected:compression_ratio=0.75:sinks=4")
    with torch.inference_mode():
        _, full = adapter.forward(tiny.model, ids[:, :-1])
    assert torch.equal(cache.layers[0].keys[:, :, :4], full.layers[0].keys[:, :, :4])


# --- eviction + quantization -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [8, 4])
def test_eviction_then_quantization_holds_both_savings_in_physical_bytes(tiny, sample, bits):
    request = Request(sample.prompt, 4, (), sample.question_offset, "aware")
    full = Engine(tiny).generate(request, parse_stack("none")).compressed_kv_bytes
    quantized = Engine(tiny).generate(request, parse_stack(f"quantized:bits={bits}")).compressed_kv_bytes
    both = Engine(tiny).generate(request, parse_stack(f"snapkv:compression_ratio=0.5:bits={bits}")).compressed_kv_bytes
    n = len(tokens.encode(tiny.tokenizer, sample.prompt)) - 1
    kept = int(n * 0.5)
    quantized_tokens, residual = kept - kept % 64, kept % 64
    heads, d, layers, item = 2, 16, 2, 4
    codes = 2 * quantized_tokens * heads * d * bits // 8
    scales = 2 * item * heads * (quantized_tokens // 64 * d + quantized_tokens)
    assert both == layers * (codes + scales + 2 * residual * heads * d * item)
    # the float residual (< 64 tokens, KIVI's) weighs much on 600 fp32 tokens; the quantized parts halve exactly
    float_residual = layers * 2 * residual * heads * d * item
    n_residual = n % 64
    quantized_part = quantized - layers * 2 * (n_residual + 1) * heads * d * item
    assert (both - float_residual) / quantized_part <= 0.5  # whole 64-token groups of the kept half
    assert both < (0.2 if bits == 4 else 0.25) * full
    _, cache = _read(
        tiny, torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)]), f"snapkv:compression_ratio=0.5:bits={bits}"
    )
    assert cache.get_seq_length() == kept + 1
