"""SelfExtend: the kernel against a direct implementation of the LongLM formula, and its invariants."""

import math

import pytest
import torch

from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.methods.attention import selfextend
from longreach.methods.attention.selfextend import choose_group, grouped_attention
from longreach.models import adapter


def naive_selfextend(call, key, value, window, group):
    """Jin et al. 2024, written out: two score matrices, neighbour where i - j < W, causal softmax."""
    n = key.shape[2]
    kpos, qpos = torch.arange(n), call.positions
    q_nb, k_nb = call.rotate(call.query, qpos), call.rotate(key, kpos)
    q_gp, k_gp = call.rotate(call.query, qpos // group + window - window // group), call.rotate(key, kpos // group)
    k_nb, k_gp = k_nb.repeat_interleave(call.groups, 1), k_gp.repeat_interleave(call.groups, 1)
    v = value.repeat_interleave(call.groups, 1)
    s_nb = q_nb @ k_nb.transpose(-1, -2) * call.scaling
    s_gp = q_gp @ k_gp.transpose(-1, -2) * call.scaling
    distance = qpos[:, None] - kpos[None, :]
    scores = torch.where(distance < window, s_nb, s_gp).masked_fill(distance < 0, -math.inf)
    return (scores.softmax(-1) @ v).transpose(1, 2)


def make_call(tiny, t, n):
    g = torch.Generator().manual_seed(n)
    module = adapter.attention_modules(tiny.model)[0]
    query = torch.randn(1, 4, t, 16, generator=g)
    key, value = torch.randn(1, 2, n, 16, generator=g), torch.randn(1, 2, n, 16, generator=g)
    positions = torch.arange(n - t, n)
    call = adapter.AttentionCall(
        module,
        0,
        query,
        key[:, :, -t:],
        value[:, :, -t:],
        positions,
        None,
        None,
        None,
        None,
        {},
        adapter.rotary_module(tiny.model),
    )
    return call, key, value


@pytest.mark.parametrize(("t", "n", "window", "group"), [(300, 300, 64, 4), (1, 500, 32, 8), (200, 700, 100, 3)])
def test_kernel_equals_the_direct_formula(tiny, monkeypatch, t, n, window, group):
    monkeypatch.setattr(selfextend, "QUERY_BLOCK", 64)  # exercise the blocking
    call, key, value = make_call(tiny, t, n)
    ours = grouped_attention(call, key, value, window, group)
    torch.testing.assert_close(ours, naive_selfextend(call, key, value, window, group), rtol=1e-4, atol=1e-5)


def test_decode_continues_the_prefill_consistently(tiny):
    ids = torch.randint(5, 1000, (1, 601), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), parse_stack("selfextend:window=128:group=4").applied(tiny):
        full, _ = adapter.forward(tiny.model, ids)
        _, cache = adapter.forward(tiny.model, ids[:, :600])
        step, _ = adapter.forward(tiny.model, ids[:, 600:], cache, start=600)
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_selfextend_changes_long_inputs_only(tiny):
    ids = torch.randint(5, 1000, (1, 700), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = tiny.model(ids).logits
        with parse_stack("selfextend:window=128:group=4").applied(tiny):
            extended = tiny.model(ids).logits
    torch.testing.assert_close(extended[:, :128], plain[:, :128], rtol=1e-4, atol=1e-5)  # only neighbours
    assert not torch.allclose(extended[:, -1], plain[:, -1])


def test_rule_keeps_every_distance_within_two_thirds_of_the_window():
    assert choose_group(32768, 2048, 8192) == 9
    assert choose_group(16384, 2048, 8192) == 5
    assert choose_group(8192, 2048, 8192) == 1, "inside the native window nothing is grouped"
    for target in (9000, 16384, 32768, 131072):
        group = choose_group(target, 2048, 8192)
        assert 2048 + (target - 2048) / group <= 2 / 3 * 8192 + 1e-9
        assert group == 1 or 2048 + (target - 2048) / (group - 1) > 2 / 3 * 8192, "the smallest such G"
    spec = parse_stack("selfextend:target=32768").methods[0]
    assert spec.plan(8192, 1000) == (2048, 9), "a target plans for that length whatever is read"
    assert parse_stack("selfextend").methods[0].plan(8192, 16384) == (2048, 5), "no target: the length read"


def test_other_architectures_fail_clearly(tmp_path, tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    from longreach.models import load_model

    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tiny.tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    gpt2 = load_model(str(tmp_path), "fp32")
    with pytest.raises(LongreachError, match="no rotary embedding module|no decoder layers"):
        with parse_stack("selfextend").applied(gpt2):
            pass
