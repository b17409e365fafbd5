"""MoA: band attention against a dense reference, the cache it keeps, the influence formula, the plan search."""

from __future__ import annotations

import json

import pytest
import torch

import longreach.cli as cli
from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.methods.attention import moa_profile
from longreach.methods.attention.moa import MoAPlan, band_attention, shipped_plans
from longreach.methods.attention.moa_profile import Profile, influence_by_distance, make_plan
from longreach.models import adapter
from longreach.tasks import parse_task


@pytest.fixture(scope="module")
def prompt_ids(tiny):
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 700, 0.5, seed=0, index=0)
    return torch.tensor([tokens.encode(tiny.tokenizer, sample.prompt)])


def write_plan(path, alphas, betas, sink=16):
    path.write_text(json.dumps({"alphas": alphas, "betas": betas, "sink": sink}))
    return f"moa:plan={path}"


def test_band_attention_is_masked_dense_attention():
    torch.manual_seed(0)
    query, keys, values = torch.randn(1, 3, 40, 8), torch.randn(1, 1, 100, 8), torch.randn(1, 1, 100, 8)
    key_positions = torch.cat((torch.arange(4), torch.arange(40, 136)))  # sinks, then a later contiguous run
    query_positions = torch.arange(96, 136)
    got = band_attention(query, keys, values, query_positions, key_positions, window=30, sink=4, scale=0.3)
    qp, kp = query_positions[:, None], key_positions[None, :]
    mask = (kp <= qp) & ((qp - kp < 30) | (kp < 4))
    expected = torch.nn.functional.scaled_dot_product_attention(
        query, keys.expand(-1, 3, -1, -1), values.expand(-1, 3, -1, -1), attn_mask=mask, scale=0.3
    )
    torch.testing.assert_close(got, expected)


def test_windows_longer_than_the_input_are_the_unmodified_model(tiny, prompt_ids, tmp_path):
    spec = write_plan(tmp_path / "full.json", [[1e6, 1e6]] * 2, [[0.0, 0.0]] * 2)
    with torch.inference_mode():
        baseline, cache = adapter.forward(tiny.model, prompt_ids, logits_to_keep=8)
        steps = [adapter.forward(tiny.model, torch.tensor([[7]]), cache, start=prompt_ids.shape[1])[0]]
        with parse_stack(spec).applied(tiny):
            got, moa_cache = adapter.forward(tiny.model, prompt_ids, logits_to_keep=8)
            steps.append(adapter.forward(tiny.model, torch.tensor([[7]]), moa_cache, start=prompt_ids.shape[1])[0])
    torch.testing.assert_close(got, baseline, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(steps[1], steps[0], atol=1e-5, rtol=1e-5)


def test_each_head_keeps_its_sinks_and_window(tiny, prompt_ids, tmp_path):
    spec = write_plan(tmp_path / "plan.json", [[100, 0], [0, 30]], [[0.0, 0.25], [0.5, 0.0]])
    n = prompt_ids.shape[1]
    windows = MoAPlan.load(spec.split("=", 1)[1]).windows(n)
    request = Request(tiny.tokenizer.decode(prompt_ids[0]), 64)
    generation = Engine(tiny).generate(request, parse_stack(spec))
    assert generation.new_tokens == 64 and generation.prompt_tokens == n
    per_token_head = 2 * tiny.model.config.head_dim * 4  # K and V, fp32
    held = sum(min(n, 16 + w - 1) for row in windows for w in row)
    assert generation.compressed_kv_bytes == per_token_head * held
    assert generation.kv_cache_bytes == per_token_head * held, "windows slide while decoding: the cache stays put"
    full = Engine(tiny).generate(request, parse_stack("none"))
    assert generation.compressed_kv_bytes < 0.5 * full.compressed_kv_bytes


def test_question_agnostic_reads_the_question_on_the_windowed_cache(tiny, tmp_path):
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 700, 0.5, seed=0, index=0)
    spec = write_plan(tmp_path / "full.json", [[1e6, 1e6]] * 2, [[0.0, 0.0]] * 2)
    request = Request(sample.prompt, 16, (), len(sample.context), "agnostic")
    assert (
        Engine(tiny).generate(request, parse_stack(spec)).text
        == Engine(tiny).generate(request, parse_stack("none")).text
    )


def test_influence_is_the_exact_loss_change_for_a_linear_loss():
    """For L = sum(W * A) the first-order formula is exact: compare with masking each pair and renormalising."""
    torch.manual_seed(1)
    n, sink = 12, 2
    logits = torch.randn(1, 2, n, n).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    probs, weights = logits.softmax(-1), torch.randn(1, 2, n, n)
    got = influence_by_distance(probs, weights, kv_heads=1, sink=sink)
    expected = torch.zeros(1, n)
    for head in range(2):
        for i in range(n):
            for j in range(sink, i):  # the diagonal (A may be 1 for i = 0) and sinks are never masked
                row = probs[0, head, i].clone()
                row[j] = 0
                row = row / row.sum()
                change = (weights[0, head, i] * (row - probs[0, head, i])).sum()
                expected[0, i - j] += change.abs()
    expected[0, 0] = got[0, 0]  # distance 0 (a query and itself) is never masked by any window
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_the_search_gives_far_reaching_heads_wide_windows_within_the_budget(tiny):
    distance = torch.zeros(2, 2, 1040)
    distance[..., :64] = 1.0  # every head cares about its neighbours ...
    distance[0, 1, 500:1000] = 5.0  # ... layer 0 head 1 also about far tokens
    plan = make_plan(tiny, keep=0.5, targets=(1024,), profiled=Profile({1024: distance}, 16, 1), sink=16)
    windows = plan.windows(1024)
    assert windows[0][1] == max(max(row) for row in windows) and windows[0][1] >= 1000
    assert plan.kept_fraction(1024) <= 0.5
    assert plan.meta["kept_fraction"]["1024"] == round(plan.kept_fraction(1024), 4)


def test_plan_files(tmp_path):
    assert "tiny-llama-half" in shipped_plans()
    with pytest.raises(LongreachError, match="no plan file"):
        parse_stack("moa:plan=missing.json")
    with pytest.raises(LongreachError, match="give a plan file"):
        parse_stack("moa")
    (tmp_path / "bad.json").write_text(json.dumps({"alphas": [[1, 2]], "betas": [[1]]}))
    with pytest.raises(LongreachError, match="same"):
        parse_stack(f"moa:plan={tmp_path / 'bad.json'}")


def test_a_plan_for_another_model_is_refused(tiny, tmp_path):
    spec = write_plan(tmp_path / "three.json", [[1, 2, 3]] * 30, [[0, 0, 0]] * 30)
    with pytest.raises(LongreachError, match="plans 30 layers x 3 KV heads"), parse_stack(spec).applied(tiny):
        pass


def test_cli_writes_the_plan(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake_make_plan(loaded, keep, targets, lengths, prompts, sink, seed, families):
        seen.update(keep=keep, targets=targets, lengths=lengths, prompts=prompts, sink=sink, families=families)
        return MoAPlan([[1.0]], [[0.5]], sink, {"kept_fraction": {"4096": 0.5}})

    monkeypatch.setattr("longreach.methods.attention.moa_profile.make_plan", fake_make_plan)
    monkeypatch.setattr(cli, "load_model", lambda model, dtype: None)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["moa-plan", "--model", "tiny-llama", "--out", str(tmp_path / "p.json"), "--keep", "0.25"])
    assert exit_info.value.code == 0
    assert seen == {
        "keep": 0.25,
        "targets": (4096, 8192),
        "lengths": (1024, 2048),
        "prompts": 4,
        "sink": 64,
        "families": ("niah_multivalue", "bio_multi"),
    }
    assert MoAPlan.load(tmp_path / "p.json").betas == [[0.5]]


def test_cli_refuses_an_unknown_calibration_family(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli, "load_model", lambda model, dtype: None)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["moa-plan", "--model", "tiny-llama", "--out", str(tmp_path / "p.json"), "--calibration", "pskey"])
    assert exit_info.value.code == 2
    assert "pskey" in capsys.readouterr().err


def test_calibration_prompts_come_from_the_named_families_in_turn(tiny):
    from longreach.methods.attention import moa_profile

    seen = []
    real = moa_profile.parse_task

    def recording(spec):
        seen.append(spec)
        return real(spec)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(moa_profile, "parse_task", recording)
        pairs = moa_profile.calibration_prompts(tiny, 1024, 3, 0, ("niah_multivalue", "bio_multi"))
    assert seen == ["niah_multivalue", "bio_multi", "niah_multivalue"]
    assert all(len(prompt) == 1024 for prompt, _ in pairs)


def test_the_recomputing_attention_gives_autograd_gradients_and_probabilities():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 4, requires_grad=True) for _ in range(3))
    seen = {}
    out = moa_profile._ObservedAttention.apply(q, k, v, 0.5, lambda p, g: seen.update(p=p, g=g))
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    probabilities = moa_profile._causal_probabilities(q2, k2, 0.5)
    probabilities.retain_grad()
    ((probabilities @ v2) * weights).sum().backward()
    torch.testing.assert_close(out, probabilities @ v2)
    for ours, reference in ((q.grad, q2.grad), (k.grad, k2.grad), (v.grad, v2.grad), (seen["g"], probabilities.grad)):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(seen["p"], probabilities)
