"""Position methods: transformers is the oracle for every kind it has; invariants for the rest."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.methods.positions.abf import compute_abf
from longreach.methods.positions.dynamic import compute_dynamic
from longreach.methods.positions.linear import compute_linear
from longreach.methods.positions.llama3 import compute_llama3
from longreach.methods.positions.longrope import compute_longrope
from longreach.methods.positions.ntk import compute_ntk
from longreach.methods.positions.power import compute_power
from longreach.methods.positions.truncated import compute_truncated
from longreach.methods.positions.yarn import compute_yarn
from longreach.models import adapter, load_model

WINDOW = 8192


def config(**rope) -> LlamaConfig:
    """A SmolLM2-shaped config (head dim 64, base 1e5, window 8192) with the given rope_parameters."""
    return LlamaConfig(
        hidden_size=576,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=WINDOW,
        rope_parameters={"rope_theta": 100000.0, **rope},
    )


def same(ours, theirs):
    assert torch.equal(ours[0], theirs[0]), (ours[0] - theirs[0]).abs().max()
    assert ours[1] == pytest.approx(theirs[1], rel=0, abs=0)


@pytest.mark.parametrize("factor", [1.0, 2.0, 4.5])
def test_linear_equals_transformers(factor):
    cfg = config(rope_type="linear", factor=factor)
    same(compute_linear(cfg), ROPE_INIT_FUNCTIONS["linear"](cfg))


@pytest.mark.parametrize("seq_len", [100, WINDOW, 3 * WINDOW + 7])
@pytest.mark.parametrize("factor", [1.0, 2.0, 4.0])
def test_dynamic_equals_transformers(factor, seq_len):
    cfg = config(rope_type="dynamic", factor=factor)
    same(compute_dynamic(cfg, seq_len=seq_len), ROPE_INIT_FUNCTIONS["dynamic"](cfg, seq_len=seq_len))


@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_static_ntk_equals_transformers_dynamic_rule_at_s_times_the_window(factor):
    ours = compute_ntk(config(rope_type="ntk", factor=factor))
    theirs = ROPE_INIT_FUNCTIONS["dynamic"](config(rope_type="dynamic", factor=1.0), seq_len=int(factor * WINDOW))
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-6, atol=0)
    dim = 64
    assert ours[0][0] == 1.0 and ours[0][-1] == pytest.approx(100000.0 ** (-(dim - 2) / dim) / factor, rel=1e-5)


@pytest.mark.parametrize(
    "rope",
    [
        dict(factor=4.0),
        dict(factor=2.0, beta_fast=16.0, beta_slow=2.0),
        dict(factor=8.0, attention_factor=1.5),
        dict(factor=4.0, truncate=False),
        dict(factor=4.0, original_max_position_embeddings=2048),
    ],
)
def test_yarn_equals_transformers(rope):
    cfg = config(rope_type="yarn", **{"original_max_position_embeddings": WINDOW, **rope})
    ours, theirs = compute_yarn(cfg), ROPE_INIT_FUNCTIONS["yarn"](cfg)
    same(ours, theirs)
    if "attention_factor" not in rope:
        assert ours[1] == pytest.approx(0.1 * math.log(rope["factor"]) + 1)


@pytest.mark.parametrize("factor", [2.0, 8.0])
def test_llama3_equals_transformers(factor):
    cfg = config(
        rope_type="llama3",
        factor=factor,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=WINDOW,
    )
    same(compute_llama3(cfg), ROPE_INIT_FUNCTIONS["llama3"](cfg))


@pytest.mark.parametrize("seq_len", [None, 4096, 3 * WINDOW])
def test_longrope_equals_transformers(seq_len):
    long = [1.0 + 0.1 * i for i in range(32)]
    short = [1.0 + 0.01 * i for i in range(32)]
    cfg = config(
        rope_type="longrope", long_factor=long, short_factor=short, factor=4.0, original_max_position_embeddings=WINDOW
    )
    same(compute_longrope(cfg, seq_len=seq_len), ROPE_INIT_FUNCTIONS["longrope"](cfg, seq_len=seq_len))


def test_abf_equals_transformers_default_rope_with_the_new_base():
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    ours = compute_abf(config(abf_theta=500000.0))
    theirs = LlamaRotaryEmbedding.compute_default_rope_parameters(config(rope_theta=500000.0))
    same(ours, theirs)
    scaled = compute_abf(config(abf_scale=5.0))
    same(scaled, theirs)


def test_truncated_basis_follows_giraffe():
    theta = compute_abf(config())[0]
    length = 2048
    truncated, factor = compute_truncated(config(truncate_length=length))
    cutoff = 2 * math.pi / length
    assert factor == 1.0
    assert torch.equal(truncated[theta >= cutoff], theta[theta >= cutoff]), "fast pairs are kept"
    middle = (theta < cutoff) & (theta >= cutoff / 8)
    assert middle.any() and torch.allclose(truncated[middle], torch.tensor(2 * math.pi / (16 * length)))
    assert (theta < cutoff / 8).any() and (truncated[theta < cutoff / 8] == 0).all(), "slowest pairs stop"


def test_power_basis_follows_giraffe():
    theta = compute_abf(config())[0]
    powered, _ = compute_power(config(power=0.5))
    pairs = torch.arange(32, dtype=torch.float32)
    assert torch.allclose(powered, theta * (1 - pairs / 32) ** 0.5)
    assert powered[0] == theta[0] and powered[-1] < theta[-1] / 5


# ---- applied to a model -----------------------------------------------------------------------------------------


def logits(tiny, spec, ids):
    with torch.no_grad(), parse_stack(spec).applied(tiny):
        return tiny.model(ids).logits


IDS = torch.randint(5, 1000, (1, 300), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "spec",
    [
        "dynamic",
        "dynamic:factor=4",
        "linear:factor=1",
        "yarn:factor=1",
        "ntk:factor=1",
        "hf:rope_type=dynamic",
        "llama3:factor=1",
        "selfextend:window=512:group=4",
    ],
)
def test_inside_the_native_window_these_equal_the_baseline_exactly(tiny, spec):
    assert torch.equal(logits(tiny, spec, IDS), logits(tiny, "none", IDS))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("linear:factor=2", "hf:rope_type=linear:factor=2"),
        ("yarn:factor=4", "hf:rope_type=yarn:factor=4"),
        ("llama3:factor=4", "hf:rope_type=llama3:factor=4"),
    ],
)
def test_through_the_model_ours_equal_transformers_config_path(tiny, ours, theirs):
    assert torch.equal(logits(tiny, ours, IDS), logits(tiny, theirs, IDS))


@pytest.mark.parametrize(
    "spec",
    [
        "linear",
        "ntk",
        "yarn:factor=4",
        "abf",
        "truncated",
        "power",
        "llama3",
        "longrope:long_factor=1/1/1/1.5/2/3/4/4:short_factor=1/1/1/1/1.5/2/3/4",
    ],
)
def test_static_methods_change_the_model_and_restore_it(tiny, spec):
    before = logits(tiny, "none", IDS)
    assert not torch.equal(logits(tiny, spec, IDS), before)
    assert torch.equal(logits(tiny, "none", IDS), before)


def test_dynamic_keeps_one_base_for_the_whole_sequence(tiny, monkeypatch):
    """transformers' dynamic type moves the base at every decode step past the window; ours does not."""
    seen = []
    original = adapter.patched_rope

    def spy(model, provider, layer_types):
        def recording(seq_len, layer_type):
            seen.append(seq_len)
            return provider(seq_len, layer_type)

        return original(model, recording, layer_types)

    monkeypatch.setattr(adapter, "patched_rope", spy)
    ids = torch.randint(5, 1000, (1, 2500))
    with torch.no_grad(), parse_stack("dynamic").applied(tiny):
        _, cache = adapter.forward(tiny.model, ids)
        for step in range(3):
            _, cache = adapter.forward(tiny.model, torch.tensor([[7]]), cache, start=2500 + step)
    assert seen == [2500] * 4


def test_longrope_lists_must_match_the_rotary_pairs(tiny):
    with pytest.raises(LongreachError, match="long_factor has 3 numbers; this model has 8 rotary pairs"):
        with parse_stack("longrope:long_factor=1/2/3").applied(tiny):
            pass


def test_two_position_methods_or_selfextend_with_dynamic_are_refused():
    with pytest.raises(LongreachError, match="at most one position method"):
        parse_stack("yarn+linear")
    with pytest.raises(LongreachError, match="selfextend cannot be stacked with dynamic: its grouped positions"):
        parse_stack("selfextend+dynamic")
    assert parse_stack("selfextend:group=4+yarn:factor=2").repr == "yarn+selfextend:group=4"


def test_bf16_positions_drift_and_longreach_positions_do_not(tiny):
    """AnchorAttention (Wang et al. 2024): positions held in bf16 lose integers past 256, so RoPE angles at
    long range are wrong by whole turns; longreach computes angles from float32 positions in any dtype."""
    inv_freq = compute_abf(config())[0].double()
    positions = torch.tensor([1001, 8100, 32700, 131000])
    exact = positions.double()[:, None] * inv_freq
    bf16_angles = positions.to(torch.bfloat16).double()[:, None] * inv_freq
    assert (bf16_angles - exact).abs().max() > 50, "bf16 positions are off by tens of radians at 32K-128K"
    tiny16 = load_model("tiny-llama", "bf16")
    rotary = adapter.rotary_module(tiny16.model)
    assert rotary.inv_freq.dtype == torch.float32, "RoPE frequencies stay float32 in a bf16 model"
    theta = rotary.inv_freq.double()
    reference = positions.double()[:, None] * theta
    reference = torch.cat((reference, reference), -1)
    for spec in ("none", "yarn:factor=1"):
        with parse_stack(spec).applied(tiny16):
            cos, sin = rotary(torch.zeros(1, dtype=torch.bfloat16), positions[None])
        assert cos.dtype == torch.bfloat16
        # float32 angles (ulp 2^-7 at 131K) then one bf16 rounding of cos/sin (~0.004): nothing else drifts
        assert (cos[0].double() - reference.cos()).abs().max() < 0.02
        assert (sin[0].double() - reference.sin()).abs().max() < 0.02


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory, tiny):
    """A random 2-layer Gemma 3 (one sliding-window layer, one global layer, per-layer-type RoPE)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("gemma3")
    config = Gemma3TextConfig(
        vocab_size=len(tiny.tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=32,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=2048,
    )
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    return load_model(str(folder), "fp32")


def test_gemma3_position_methods_rescale_the_global_layers_only(tiny_gemma3):
    assert adapter.long_range_layer_types(tiny_gemma3.model.config) == ["full_attention"]
    ids = torch.randint(5, 1000, (1, 200), generator=torch.Generator().manual_seed(3))
    base = logits(tiny_gemma3, "none", ids)
    assert torch.equal(logits(tiny_gemma3, "linear:factor=1", ids), base)
    assert torch.equal(
        logits(tiny_gemma3, "yarn:factor=4", ids), logits(tiny_gemma3, "hf:rope_type=yarn:factor=4", ids)
    )
    assert not torch.equal(logits(tiny_gemma3, "yarn:factor=4", ids), base)
    rotary = adapter.rotary_module(tiny_gemma3.model)
    with parse_stack("linear:factor=4").applied(tiny_gemma3):
        cos_local, _ = rotary(torch.zeros(1), torch.arange(100)[None], "sliding_attention")
    reference, _ = rotary(torch.zeros(1), torch.arange(100)[None], "sliding_attention")
    assert torch.equal(cos_local, reference), "sliding-window layers keep their RoPE"
    assert torch.equal(logits(tiny_gemma3, "none", ids), base)


def test_gemma3_attention_methods_fail_clearly(tiny_gemma3):
    with pytest.raises(LongreachError, match="support Llama-family attention .* this model uses Gemma3Attention"):
        with parse_stack("selfextend").applied(tiny_gemma3):
            pass
