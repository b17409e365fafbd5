"""Readers: invariants (input that fits reads exactly like the plain model) and their kernels' oracles."""

import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.methods.readers.blocks import BlockRetrieval
from longreach.methods.readers.infiniretri import sentence_units, split_sentences
from longreach.models import adapter
from longreach.tasks import parse_task


def request_for(sample):
    return Request(sample.prompt, 8, sample.stop, question_offset=len(sample.context))


@pytest.mark.parametrize("spec", ["infiniretri", "longheads", "landmark_analogue:block=64:blocks=8"])
def test_input_that_fits_reads_like_the_plain_model(tiny, spec):
    sample = parse_task("passkey").task.generate(tiny.tokenizer, 400, 0.5, seed=0, index=0)
    plain = Engine(tiny).generate(request_for(sample), parse_stack("none"))
    read = Engine(tiny).generate(request_for(sample), parse_stack(spec))
    assert read.text == plain.text and read.new_tokens == plain.new_tokens


@pytest.mark.parametrize(
    "spec",
    [
        "infiniretri:chunk=256:topk=40",
        "longheads:block=32:blocks=6:segment=128",
        "landmark_analogue:block=32:blocks=6:segment=96",
        "infiniretri:chunk=256+dynamic",
    ],
)
def test_readers_answer_inputs_far_beyond_their_chunk(tiny, spec):
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 3000, 0.3, seed=0, index=0)
    generation = Engine(tiny).generate(request_for(sample), parse_stack(spec))
    assert generation.new_tokens >= 1 and generation.seconds > 0 and generation.peak_rss_mb > 0


def naive_block_attention(call, key, value, block, slots, first_query):
    """The retrieval rule written out per head with loops: mean-key summaries, top blocks by the mean
    query, contiguous positions, causal softmax over the gathered keys. Output (t, h, d) for the queries
    from ``first_query`` on, all in one block."""
    current = first_query // block
    heads, d = call.query.shape[1], call.query.shape[3]
    out = torch.zeros(call.query.shape[2], heads, d)
    for head in range(heads):
        kv = head // call.groups
        query = call.query[0, head]  # (t, d)
        summaries = [key[0, kv, b * block : (b + 1) * block].mean(0) for b in range(1, current - 1)]
        scores = torch.stack([query.mean(0) @ s for s in summaries])
        chosen = sorted((torch.topk(scores, slots - 3).indices + 1).tolist())
        blocks = [0] + chosen + [current - 1]
        index = [b * block + i for b in blocks for i in range(block)] + list(
            range(current * block, first_query + query.shape[0])
        )
        k = key[0, kv, index][None, None]
        v = value[0, kv, index]
        q_pos = len(blocks) * block + (first_query - current * block) + torch.arange(query.shape[0])
        k_rot = call.rotate(k, torch.arange(len(index)))[0, 0]
        q_rot = call.rotate(query[None, None], q_pos)[0, 0]
        s = (q_rot @ k_rot.T) * call.scaling
        s = s.masked_fill(torch.arange(len(index))[None, :] > q_pos[:, None], float("-inf"))
        out[:, head] = s.softmax(-1) @ v
    return out


def test_block_retrieval_kernel_matches_the_rule_written_out(tiny):
    block, slots, n = 16, 5, 12 * 16
    g = torch.Generator().manual_seed(4)
    module = adapter.attention_modules(tiny.model)[0]
    query, key, value = (
        torch.randn(1, 4, n, 16, generator=g),
        torch.randn(1, 2, n, 16, generator=g),
        torch.randn(1, 2, n, 16, generator=g),
    )
    retrieval = BlockRetrieval(block=block, slots=slots, summary="mean")
    rotary = adapter.rotary_module(tiny.model)
    call = adapter.AttentionCall(module, 0, query, key, value, torch.arange(n), None, None, None, None, {}, rotary)
    ours = retrieval.kernel(call, None)[0]  # (n, h, d)
    last = n - block
    last_call = adapter.AttentionCall(
        module, 0, query[:, :, last:], None, None, torch.arange(last, n), None, None, None, None, {}, rotary
    )
    expected = naive_block_attention(last_call, key, value, block, slots, last)
    torch.testing.assert_close(ours[last:], expected, rtol=1e-4, atol=1e-5)


def _random_call(tiny, n, seed):
    g = torch.Generator().manual_seed(seed)
    module = adapter.attention_modules(tiny.model)[0]
    query, key, value = (torch.randn(1, heads, n, 16, generator=g) for heads in (4, 2, 2))
    rotary = adapter.rotary_module(tiny.model)
    call = adapter.AttentionCall(module, 0, query, key, value, torch.arange(n), None, None, None, None, {}, rotary)
    return call, key, value


def test_per_token_selection_matches_the_rule_written_out_for_every_query(tiny):
    block, slots, n = 16, 5, 10 * 16
    call, key, value = _random_call(tiny, n, 5)
    ours = BlockRetrieval(block=block, slots=slots, summary="mean", select="token").kernel(call, None)[0]
    rotary = adapter.rotary_module(tiny.model)
    for position in (slots * block, 7 * block + 3, n - 1):  # the first retrieving query, one inside a block, the last
        single = adapter.AttentionCall(
            call.module, 0, call.query[:, :, position : position + 1], None, None, torch.tensor([position]),
            None, None, None, None, {}, rotary,
        )  # fmt: skip
        expected = naive_block_attention(single, key, value, block, slots, position)
        torch.testing.assert_close(ours[position : position + 1], expected, rtol=1e-4, atol=1e-5)
    by_block = BlockRetrieval(block=block, slots=slots, summary="mean").kernel(call, None)[0]
    assert torch.equal(ours[: slots * block], by_block[: slots * block]), "inside the slots both are plain attention"
    assert not torch.allclose(ours[slots * block :], by_block[slots * block :]), "per-query choices differ"


def test_longheads_chunk_key_is_scaled_attention_pooling_over_bidirectional_chunk_attention(tiny):
    """LongHeads' chunk key (Lu et al. 2024, reference LuLuLuyi/LongHeads): o = softmax(q k^T / sqrt(d)) v with every
    token of the chunk seeing every other (local RoPE positions), m = mean o, key = softmax(m . k / sqrt(d)) k."""
    block = 16
    call, key, value = _random_call(tiny, block, 8)
    ours = BlockRetrieval(block=block, slots=4, summary="pooled")._summarise(call, call.query[0], key[0], value[0])
    d, local = 16, torch.arange(block)
    for head in range(4):
        kv = head // call.groups
        q = call.rotate(call.query[:, head : head + 1], local)[0, 0]
        k = call.rotate(key[:, kv : kv + 1], local)[0, 0]
        o = torch.softmax(q @ k.T / d**0.5, dim=-1) @ value[0, kv]  # no causal mask: bidirectional
        m = o.mean(dim=0)
        expected = torch.softmax(k @ m / d**0.5, dim=0) @ k
        torch.testing.assert_close(ours[head], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("summary", ["mean", "pooled"])
def test_block_retrieval_keeps_positions_inside_the_window_and_decodes(tiny, summary):
    ids = torch.randint(5, 1000, (1, 40 * 16), generator=torch.Generator().manual_seed(6))
    retrieval = BlockRetrieval(block=16, slots=6, summary=summary)
    with torch.no_grad(), adapter.attention_kernel(tiny.model, retrieval.kernel):
        _, cache = adapter.forward(tiny.model, ids[:, :-1])
        logits, cache = adapter.forward(tiny.model, ids[:, -1:], cache, start=ids.shape[1] - 1)
    assert torch.isfinite(logits).all()
    assert len(retrieval.layers[0].summaries) == 40, "every complete block is summarised, decode included"
    assert retrieval.layers[0].summaries[0].shape == (4, 16)


def test_sentence_split_keeps_every_character():
    text = 'First one. Second?  Third!\n\nFourth without end\n{\n"a": "b",\n"c": "d"\n}'
    pieces = split_sentences(text)
    assert "".join(pieces) == text
    assert pieces[3:] == ["Fourth without end\n", "{\n", '"a": "b",\n', '"c": "d"\n', "}"], "lines are units"


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_infiniretri_cuts_one_tokenization_of_the_prompt(tiny, smollm2_tokenizer, which):
    """Units are cut from the prompt's own tokens: joined again they are the prompt's tokens, none too long; the
    former sentence-by-sentence tokenization made more tokens than the prompt has (the 1M -> 1.27M growth)."""
    tokenizer = tiny.tokenizer if which == "tiny" else smollm2_tokenizer
    sample = parse_task("niah_multikey_1").task.generate(tokenizer, 4096, 0.5, seed=0, index=0)
    units, question = sentence_units(tokenizer, sample.prompt, len(sample.context), 64)
    whole = tokens.encode(tokenizer, sample.prompt)
    assert tokens.encode(tokenizer, "") + [t for unit in units for t in unit] + question == whole
    assert len(units) > 40 and max(map(len, units)) <= 64
    assert tokenizer.decode(question).strip() == sample.prompt[len(sample.context) :].strip()
    one_by_one = sum(len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in split_sentences(sample.context))
    if which == "smollm2":
        assert one_by_one > sum(map(len, units)), "sentences tokenized alone make more tokens"


def test_infiniretri_reports_the_prompt_length_it_was_given(tiny):
    sample = parse_task("niah_single_2").task.generate(tiny.tokenizer, 3000, 0.3, seed=0, index=0)
    generation = Engine(tiny).generate(request_for(sample), parse_stack("infiniretri:chunk=256:topk=40"))
    assert generation.prompt_tokens == 3000


def test_infiniretri_steps_stay_bounded_on_one_long_line(tiny, monkeypatch):
    """A haystack without sentence ends (one long line of pairs) is cut into units of at most ``unit`` tokens,
    so no step reads the whole input at once."""
    from longreach.methods.readers.infiniretri import InfiniRetri

    context = "pairs: " + ", ".join(f"k{i} = v{i * 7 % 1000}" for i in range(700))
    question = " Question: what is k5? Answer:"
    lengths = []
    original = InfiniRetri._question_attention

    def recording(self, backend, inner, step_ids, offset, width, m):
        lengths.append(step_ids.shape[1])
        return original(self, backend, inner, step_ids, offset, width, m)

    monkeypatch.setattr(InfiniRetri, "_question_attention", recording)
    total = len(tiny.tokenizer(context + question)["input_ids"])
    request = Request(context + question, 4, (), question_offset=len(context))
    Engine(tiny).generate(request, parse_stack("infiniretri:chunk=256:topk=8:unit=16:sink=16"))
    assert total > 3000 and len(lengths) > 5
    assert max(lengths) <= 1 + 16 + 256 + 8 * 16 + 16 + 20, "sink + chunk + retained units + question"


def test_readers_refuse_attention_methods():
    with pytest.raises(LongreachError, match="longheads cannot be stacked with selfextend: both replace"):
        parse_stack("longheads+selfextend")


@pytest.mark.parametrize("reader", ["infiniretri", "longheads", "landmark_analogue"])
def test_readers_refuse_cache_methods(reader):
    with pytest.raises(LongreachError, match=f"{reader} cannot be stacked with snapkv: a reader decides"):
        parse_stack(f"{reader}+snapkv:compression_ratio=0.5")
