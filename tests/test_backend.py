import pytest
import torch

from longreach import tokens
from longreach.backends import HFBackend, Request
from longreach.backends.base import cut_at_stop
from longreach.methods import parse_stack


def test_greedy_decode_matches_transformers_generate(tiny):
    """transformers' own greedy generate is the oracle for our prefill + decode loop."""
    prompt = "The grass is green. The sky is blue. The pass key is 12345. What is the pass key?"
    ids = torch.tensor([tokens.encode(tiny.tokenizer, prompt)])
    expected = tiny.model.generate(ids, max_new_tokens=20, do_sample=False, min_new_tokens=20)[0, ids.shape[1] :]
    generation = HFBackend(tiny).generate([Request(prompt, 20)], parse_stack("none"))[0]
    assert generation.new_tokens == 20
    assert generation.text == tiny.tokenizer.decode(expected, skip_special_tokens=True)


def test_costs_are_measured_and_the_cache_is_physical_bytes(tiny):
    prompt = "word " * 300
    generation = HFBackend(tiny).generate([Request(prompt, 5)], parse_stack("none"))[0]
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
    fresh = HFBackend(tiny).generate(requests, stack)
    reusing = HFBackend(tiny, reuse_prefix=True).generate(requests, stack)
    assert [g.text for g in reusing] == [g.text for g in fresh]
    assert reusing[0].reused_tokens == 0
    assert reusing[1].reused_tokens > 200 and reusing[2].reused_tokens > 200, "the shared haystack is reused"
    assert [g.kv_cache_bytes for g in reusing] == [g.kv_cache_bytes for g in fresh]


def test_prefix_reuse_needs_the_same_length_and_stack(tiny):
    backend = HFBackend(tiny, reuse_prefix=True)
    prompt = "word " * 400
    backend.generate([Request(prompt, 2)], parse_stack("none"))
    assert backend.generate([Request(prompt + "more", 2)], parse_stack("none"))[0].reused_tokens == 0
    backend.generate([Request(prompt, 2)], parse_stack("none"))
    assert backend.generate([Request(prompt, 2)], parse_stack("linear"))[0].reused_tokens == 0


def test_gpu_peak_is_zero_on_the_cpu():
    from longreach.measure import peak_gpu

    with peak_gpu("cpu") as peak:
        torch.ones(1000)
    assert peak.bytes == 0
