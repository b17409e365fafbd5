"""Squeezed Attention: k-means, calibration of the global threshold, exactness at sparsity 0, honest bytes."""

from __future__ import annotations

import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.methods.attention.squeezed import Squeezed, SqueezedStorage, kmeans
from longreach.models import adapter
from longreach.tasks import parse_task


@pytest.fixture(scope="module")
def sample(tiny):
    return parse_task("niah_single_2").task.generate(tiny.tokenizer, 900, 0.5, seed=0, index=0)


def read(tiny, sample, spec):
    """Context (the fixed part) then question under ``spec``: (logits of the question, cache)."""
    ids = torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])
    split = len(tokens.encode(tiny.tokenizer, sample.context))
    with torch.inference_mode(), parse_stack(spec).applied(tiny):
        _, cache = adapter.forward(tiny.model, ids[:, :split])
        logits, cache = adapter.forward(tiny.model, ids[:, split:], cache, start=split, logits_to_keep=8)
    return logits, cache


def test_kmeans_recovers_separated_blobs():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    points = (centers.repeat_interleave(50, dim=0) + torch.randn(150, 2, generator=generator)).unsqueeze(0)
    labels = kmeans(points, 3, 10, generator)[0]
    groups = [set(labels[i * 50 : (i + 1) * 50].tolist()) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3


def test_sparsity_zero_is_exact_attention(tiny, sample):
    baseline, _ = read(tiny, sample, "none")
    got, cache = read(tiny, sample, "squeezed:sparsity=0:observation=16")
    assert isinstance(cache.layers[0], SqueezedStorage), "the context was clustered"
    torch.testing.assert_close(got, baseline, atol=1e-5, rtol=1e-5)


def test_more_sparsity_attends_fewer_keys_and_hierarchy_only_removes(tiny, sample):
    _, cache = read(tiny, sample, "squeezed:sparsity=0.7:observation=16")
    layer = cache.layers[1]
    method = Squeezed(sparsity=0.7, observation=16)
    queries = torch.randn(1, 4, 5, 16)
    fractions = []
    for factor in (0.3, 1.0, 3.0):  # thresholds around the uniform attention 1 / F'
        fractions.append(method.visible(layer, queries, factor / layer.clustered, 0.25).float().mean().item())
    assert fractions[0] >= fractions[1] >= fractions[2] and fractions[0] > fractions[2]
    _, hierarchical_cache = read(tiny, sample, "squeezed:sparsity=0.7:observation=16:hierarchical=true")
    nested = Squeezed(sparsity=0.7, observation=16, hierarchical=True, coarse_scale=3.0)
    coarse_layer = hierarchical_cache.layers[1]
    tau = 1.0 / coarse_layer.clustered
    flat = Squeezed(sparsity=0.7, observation=16).visible(coarse_layer, queries, tau, 0.25)
    narrowed = nested.visible(coarse_layer, queries, tau, 0.25)
    assert (narrowed <= flat).all() and narrowed.sum() < flat.sum()


def test_the_threshold_is_the_sparsity_quantile_of_the_calibration_estimates(tiny, sample):
    """Per query head, the fraction of fixed keys whose estimated attention passes tau is about 1 - sparsity."""
    ids = torch.tensor([tokens.encode(tiny.tokenizer, sample.context)])
    method = Squeezed(sparsity=0.6, observation=32)
    with torch.inference_mode():
        seen = []
        with adapter.after_attention(tiny.model, lambda observed, cache: seen.append((observed, cache))):
            adapter.forward(tiny.model, ids)
        estimates = []
        for observed, cache in seen:
            keys, _ = adapter.layer_kv(cache, observed.layer)
            index = method.build_index(keys[:, :, :-32], torch.Generator().manual_seed(0))
            estimates.append(method.estimated_attention(observed.queries(last=32), index, observed.module.scaling))
    pooled = torch.cat([e.flatten() for e in estimates])
    tau = torch.quantile(pooled, 0.6)
    assert (pooled > tau).float().mean().item() == pytest.approx(0.4, abs=0.02)


def test_nothing_is_evicted_and_the_index_is_counted(tiny, sample):
    request = Request(sample.prompt, 8, (), len(sample.context), "agnostic")
    plain = Engine(tiny).generate(request, parse_stack("none"))
    squeezed = Engine(tiny).generate(request, parse_stack("squeezed:observation=16"))
    _, cache = read(tiny, sample, "squeezed:observation=16")
    index = sum(
        t.untyped_storage().nbytes() for layer in cache.layers for t in (layer.centroids, layer.sizes, layer.labels)
    )
    assert squeezed.compressed_kv_bytes == plain.compressed_kv_bytes + index
    assert squeezed.new_tokens == 8
