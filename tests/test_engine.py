import pytest
import torch

from longreach import tokens
from longreach.engine import SPEEDUPS, Engine
from longreach.generation import Request, cut_at_stop
from longreach.methods import parse_stack


def test_greedy_decode_matches_transformers_generate(tiny):
    """transformers' own greedy generate is the oracle for our prefill + decode loop."""
    prompt = "The grass is green. The sky is blue. The pass key is 12345. What is the pass key?"
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt)])
    expected = tiny.model.generate(ids, max_new_tokens=20, do_sample=False, min_new_tokens=20)[0, ids.shape[1] :]
    generation = Engine(tiny).generate(Request(prompt, 20), parse_stack("none"))
    assert generation.new_tokens == 20
    assert generation.text == tiny.tokenizer.decode(expected, skip_special_tokens=True)


def test_costs_are_measured_and_the_cache_is_physical_bytes(tiny):
    prompt = "word " * 300
    generation = Engine(tiny).generate(Request(prompt, 5), parse_stack("none"))
    n = tokens.count(tiny.tokenizer, prompt)
    assert generation.prompt_tokens == n
    config = tiny.model.config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4  # fp32
    # the cache holds the prompt and every decoded token but the last (its KV is never computed)
    assert generation.kv_cache_bytes == per_token * (n + generation.new_tokens - 1)
    assert generation.kv_cache_bytes == tiny.kv_bytes_per_token * (n + generation.new_tokens - 1)
    assert 0 < generation.prefill_seconds <= generation.seconds
    assert generation.peak_rss_mb > 50


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        (" 12345.\nThe", ("\n",), " 12345."),
        ("\n 12345.\nmore", ("\n",), "\n 12345."),
        (" 12345.", ("\n",), None),
        (" a\n\nb", ("\n\n",), " a"),
        (" a\nb", (), None),
    ],
)
def test_stop_strings_cut_after_some_output(text, stops, expected):
    assert cut_at_stop(text, stops) == expected


@pytest.mark.parametrize("spec", ["none", "dynamic", "selfextend:window=256:group=4", "yarn:factor=2"])
def test_prefix_reuse_gives_the_same_answers(tiny, spec):
    from longreach.tasks import parse_task

    task = parse_task("niah_single_2").task
    samples = [task.generate(tiny.tokenizer, 1500, depth, seed=0, index=0) for depth in (0.2, 0.6, 0.9)]
    requests = [Request(s.prompt, 8) for s in samples]
    stack = parse_stack(spec)
    fresh_engine, reusing_engine = Engine(tiny), Engine(tiny, reuse_prefix=True)
    fresh = [fresh_engine.generate(request, stack) for request in requests]
    reusing = [reusing_engine.generate(request, stack) for request in requests]
    assert [g.text for g in reusing] == [g.text for g in fresh]
    assert reusing[0].reused_tokens == 0
    assert reusing[1].reused_tokens > 200 and reusing[2].reused_tokens > 200, "the shared haystack is reused"
    assert [g.kv_cache_bytes for g in reusing] == [g.kv_cache_bytes for g in fresh]


def test_prefix_reuse_needs_the_same_stack_and_for_length_reading_stacks_the_same_length(tiny):
    engine = Engine(tiny, reuse_prefix=True)
    prompt = "word " * 400
    engine.generate(Request(prompt, 2), parse_stack("none"))
    assert engine.generate(Request(prompt + "more", 2), parse_stack("none")).reused_tokens > 300, "a longer prompt"
    engine.generate(Request(prompt, 2), parse_stack("none"))
    assert engine.generate(Request(prompt, 2), parse_stack("linear")).reused_tokens == 0, "another stack"
    engine.generate(Request(prompt, 2), parse_stack("dynamic"))
    assert engine.generate(Request(prompt + "more", 2), parse_stack("dynamic")).reused_tokens == 0, "dynamic reads n"
    engine.generate(Request(prompt, 2), parse_stack("dynamic"))
    assert engine.generate(Request(prompt, 2), parse_stack("dynamic")).reused_tokens > 300


def test_gpu_peak_is_zero_on_the_cpu():
    from longreach.measure import peak_gpu

    with peak_gpu("cpu") as peak:
        torch.ones(1000)
    assert peak.bytes == 0


FAST_DECODE_STACKS = ["none", "yarn:factor=2", "selfextend:window=256:group=4", "snapkv:compression_ratio=0.5"]


@pytest.mark.parametrize("spec", [*FAST_DECODE_STACKS, "quantized:bits=4"])
def test_fast_decode_gives_the_answers_of_the_earlier_loop(tiny, spec):
    """Packed single-query attention, the preallocated cache and the streamed text change no token, together or
    one left out."""
    from longreach.tasks import parse_task

    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 900, 0.5, seed=0, index=0)
    stack = parse_stack(spec)
    for request in (Request(sample.prompt, 40), Request(sample.prompt, 40, stop=("e",))):
        before = Engine(tiny, speedups=()).generate(request, stack)
        for speedups in [SPEEDUPS] + [[s for s in SPEEDUPS if s != left_out] for left_out in SPEEDUPS]:
            after = Engine(tiny, speedups=speedups).generate(request, stack)
            assert after.text == before.text
            assert (after.new_tokens, after.decode_steps) == (before.new_tokens, before.decode_steps)


def test_the_preallocated_cache_decodes_like_a_growing_one_and_is_plain_afterwards(tiny):
    from longreach.models import adapter

    ids = torch.tensor([tokens.encode(tiny.tokenizer, "word " * 200)])
    n = ids.shape[1]
    with torch.inference_mode():
        _, growing = adapter.forward(tiny.model, ids)
        kept = adapter.clone_cache(growing)
        with adapter.preallocated(kept, 8) as applied:
            assert applied
            for step in range(10):  # two steps past the room: the cache grows as before
                token = torch.tensor([[step + 3]])
                expected, growing = adapter.forward(tiny.model, token, growing, n + step)
                got, kept = adapter.forward(tiny.model, token, kept, n + step)
                assert torch.equal(got, expected)
    assert adapter.is_plain_cache(kept) and kept.get_seq_length() == n + 10
    for layer in range(len(kept.layers)):
        for got, expected in zip(adapter.layer_kv(kept, layer), adapter.layer_kv(growing, layer), strict=True):
            assert torch.equal(got, expected)


def test_the_preallocated_cache_counts_its_room_and_leaves_other_caches_alone(tiny):
    from longreach.models import adapter

    ids = torch.tensor([tokens.encode(tiny.tokenizer, "word " * 100)])
    n = ids.shape[1]
    with torch.inference_mode():
        _, cache = adapter.forward(tiny.model, ids)
        with adapter.preallocated(cache, 20):
            pass
        assert adapter.cache_bytes(cache) == tiny.kv_bytes_per_token * (n + 20), "physical: the buffers' bytes"
        assert cache.get_seq_length() == n
        adapter.set_layer_kv(cache, 0, *(t[:, :, :-1] for t in adapter.layer_kv(cache, 0)))  # lengths differ
        with adapter.preallocated(cache, 20) as applied:
            assert not applied


@pytest.mark.parametrize("groups", [1, 2, 3])
def test_packed_decode_attention_matches_transformers_sdpa(groups):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from longreach.models.adapter.sdpa import packed_sdpa

    module = torch.nn.Module()
    module.num_key_value_groups = groups
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        query = torch.randn(2, 2 * groups, 1, 16, generator=generator).to(dtype)
        key, value = (torch.randn(2, 2, 37, 16, generator=generator).to(dtype) for _ in range(2))
        expected, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.25)
        got, _ = packed_sdpa(module, query, key, value, None, scaling=0.25)
        assert got.shape == expected.shape == (2, 1, 2 * groups, 16)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        mask = torch.ones(2, 1, 1, 37, dtype=torch.bool)
        mask[0, ..., :5] = False  # a masked step is transformers' own sdpa, untouched
        assert torch.equal(
            packed_sdpa(module, query, key, value, mask, scaling=0.25)[0],
            sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)[0],
        )


def test_packed_decode_attention_is_restored_and_skips_other_implementations(tiny):
    from longreach.models import adapter

    with adapter.packed_decode_attention(tiny.model) as applied:
        assert applied and tiny.model.config._attn_implementation == "longreach_sdpa"
    assert tiny.model.config._attn_implementation == "sdpa"
    tiny.model.set_attn_implementation("eager")
    try:
        with adapter.packed_decode_attention(tiny.model) as applied:
            assert not applied and tiny.model.config._attn_implementation == "eager"
    finally:
        tiny.model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups", [1, 3])
def test_split_causal_matches_sdpa_under_the_continuation_mask(dtype, groups, monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from longreach.models.adapter import sdpa
    from longreach.models.adapter.sdpa import continued_sdpa, is_causal_continuation, split_causal

    monkeypatch.setattr(sdpa, "ROWS", 4)  # the mask is checked 4 rows at a time
    module = torch.nn.Module()
    module.num_key_value_groups = groups
    generator = torch.Generator().manual_seed(0)
    cached, rows = 40, 23
    query = torch.randn(1, 2 * groups, rows, 16, generator=generator).to(dtype)
    key, value = (torch.randn(1, 2, cached + rows, 16, generator=generator).to(dtype) for _ in range(2))
    mask = (torch.arange(cached + rows)[None, :] <= torch.arange(rows)[:, None] + cached)[None, None]
    assert is_causal_continuation(mask)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    got = split_causal(query, key, value, 0.25)
    assert got.shape == expected.shape == (1, rows, 2 * groups, 16) and got.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)
    assert torch.equal(continued_sdpa(module, query, key, value, mask, scaling=0.25)[0], got)
    windowed = mask & (torch.arange(cached + rows)[None, :] > torch.arange(rows)[:, None] + cached - 7)[None, None]
    assert not is_causal_continuation(windowed), "a sliding window is not split"
    padded = mask.clone()
    padded[..., 0] = False
    assert not is_causal_continuation(padded), "nor a padded row"
    late = mask.clone()
    late[..., 21, -1] = True
    assert not is_causal_continuation(late), "nor a row that sees a later key (in the last block of rows)"


@pytest.mark.parametrize("window", [None, 7])
def test_continued_sdpa_chunks_rows_under_another_mask(window, monkeypatch):
    """t rows over p cached + t new keys under a sliding-window mask (or, on another device, the causal one): the
    chunked rows give sdpa's output, and each chunk hands the kernel only the keys its rows may see."""
    from transformers.integrations import sdpa_attention
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from longreach.models.adapter import sdpa

    monkeypatch.setattr(sdpa, "ROWS", 4)
    if window is None:  # the causal mask is chunked off the CPU: pretend the split form does not apply
        monkeypatch.setattr(sdpa, "is_causal_continuation", lambda mask: False)
    module = torch.nn.Module()
    module.num_key_value_groups = 3
    generator = torch.Generator().manual_seed(0)
    cached, rows = 9, 11
    keys = cached + rows
    query = torch.randn(1, 6, rows, 16, generator=generator)
    key, value = (torch.randn(1, 2, keys, 16, generator=generator) for _ in range(2))
    row, column = torch.arange(rows)[:, None] + cached, torch.arange(keys)[None, :]
    mask = column <= row
    if window is not None:
        mask &= column > row - window
    mask = mask[None, None]  # (1, 1, t, n)
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    seen_keys = []
    original = sdpa_attention.sdpa_attention_forward

    def spy(module, query, key, *args, **kwargs):
        seen_keys.append(key.shape[2])
        return original(module, query, key, *args, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    got, _ = sdpa.continued_sdpa(module, query, key, value, mask, scaling=0.25)
    assert got.shape == expected.shape == (1, rows, 6, 16)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    assert seen_keys == [cached + 4, cached + 8, keys], "each chunk over the keys up to its last row's"
    seen_keys.clear()
    assert torch.equal(sdpa.continued_sdpa(module, query, key, value, None, scaling=0.25)[0],
                       sdpa_attention_forward(module, query, key, value, None, scaling=0.25)[0])  # fmt: skip
    assert seen_keys == [keys], "no mask: one call, as sdpa"


def test_continued_attention_gives_the_logits_of_one_masked_read_on_top_of_a_kept_prefix(tiny, monkeypatch):
    from longreach.models.adapter import sdpa

    rows_per_call, masks_checked = [], []
    original, check = torch.nn.functional.scaled_dot_product_attention, sdpa.is_causal_continuation

    def spy(query, *args, **kwargs):
        rows_per_call.append(query.shape[2])
        return original(query, *args, **kwargs)

    def counted_check(mask):
        masks_checked.append(id(mask))
        return check(mask)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(sdpa, "is_causal_continuation", counted_check)
    request = Request("word " * 300 + "The pass key is 12345. What is the pass key?", 8)
    stack = parse_stack("none")
    texts, logits, masked_calls, checks = [], [], [], []
    for speedups in (SPEEDUPS, tuple(s for s in SPEEDUPS if s != "continued_attention")):
        engine = Engine(tiny, reuse_prefix=True, speedups=speedups)
        engine.generate(Request("word " * 200, 2), stack)  # kept: the first 200 words
        rows_per_call.clear()
        masks_checked.clear()
        with torch.inference_mode(), stack.applied(tiny):
            read = engine.read_prompt(engine.encode(request.prompt), request, stack)
        assert read.reused > 150
        logits.append(read.logits)
        masked_calls.append(len(rows_per_call))
        checks.append(len(masks_checked))
        engine.generate(Request("word " * 200, 2), stack)
        texts.append(engine.generate(request, stack).text)
    assert masked_calls[0] == 0 and masked_calls[1] == 2, "split: no sdpa call; without: one a layer"
    assert checks == [1, 0], "the one forward's mask is checked once, not once a layer (2 layers)"
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)
    assert texts[0] == texts[1]
    assert tiny.model.config._attn_implementation == "sdpa", "restored"


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_streamed_answer_text_stops_where_full_decoding_does(which, tiny, smollm2_tokenizer):
    """The DecodeStream text finds every stop exactly where re-decoding the whole answer each step would, and
    ends as the full decode (random ids include partial UTF-8 bytes and special tokens)."""
    from longreach.engine.text import AnswerText

    tokenizer = tiny.tokenizer if which == "tiny" else smollm2_tokenizer
    generator = torch.Generator().manual_seed(1)
    for trial in range(30):
        ids = torch.randint(0, len(tokenizer), (60,), generator=generator).tolist()
        stops = (("\n",), ("e",), ("the", " a"), ())[trial % 4]
        streamed, full = AnswerText(tokenizer, stops), AnswerText(tokenizer, stops, incremental=False)
        assert streamed._stream is not None
        for token in ids:
            cut = streamed.add(token)
            assert cut == full.add(token)
            if cut is not None:
                break
        assert streamed.decode() == tokenizer.decode(streamed.ids, skip_special_tokens=True)


def test_packed_linears_give_the_logits_of_plain_linears_in_bf16():
    from longreach.models import adapter, load_model

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU has no oneDNN bf16 support")
    loaded = load_model("tiny-llama", "bf16")
    model = loaded.model
    ids = torch.tensor([tokens.encode(loaded.tokenizer, "word " * 50)])
    with torch.inference_mode():
        expected, cache = adapter.forward(model, ids)
        step, cache = adapter.forward(model, torch.tensor([[5]]), cache, ids.shape[1])
        with adapter.packed_linears(model) as count:
            assert count == 2 * 7 + 1, "every projection of both layers and the head"
            got, packed_cache = adapter.forward(model, ids)
            got_step, _ = adapter.forward(model, torch.tensor([[5]]), packed_cache, ids.shape[1])
    assert torch.equal(got, expected) and torch.equal(got_step, step)
    assert not any("forward" in vars(m) for m in model.modules() if isinstance(m, torch.nn.Linear)), "restored"
    adapter.drop_packed(model)
    request = Request("The grass is green. The sky is blue. The pass key is 12345. What is the pass key?", 24)
    before = Engine(loaded, speedups=()).generate(request, parse_stack("none"))
    assert Engine(loaded).generate(request, parse_stack("none")).text == before.text


def test_unknown_speedups_are_refused_with_the_valid_ones(tiny):
    from longreach.errors import LongreachError

    with pytest.raises(LongreachError, match="packed_attention"):
        Engine(tiny, speedups=("warp",))
