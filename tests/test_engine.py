import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
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
