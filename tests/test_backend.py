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
