"""``utk`` (Untie the Knots): the shuffle is a permutation of the document pieces that keeps every token (and each
document's piece order), the knots and the trace restore every document exactly, and the loss scores what the
paper scores."""

from __future__ import annotations

import copy

import numpy as np
import torch

from longreach.train.recipe import IGNORE, Document, recipe_from_spec
from longreach.train.recipes.utk import TEXT, Markers, fill, overhead, untie

VOCAB = 1000
MARKERS = Markers.past(VOCAB, 3, trace=True)
OPEN_D, CLOSE_D, OPEN_S, SEP, CLOSE_S = MARKERS.trace


def documents(sizes=(30, 45, 31, 60), seed=0):
    """Documents of distinct tokens (each its own range of 160 ids, shuffled), so a token names its document."""
    rng = np.random.default_rng(seed)
    return [Document(tuple(int(t) for t in 5 + 160 * d + rng.permutation(n))) for d, n in enumerate(sizes)]


def restore(tokens):
    """The oracle: documents rebuilt from an untied row by the <D> ids, the knots and the <S> traces."""
    texts, traces, current, knots = {}, [], None, {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == OPEN_D:
            end = tokens.index(CLOSE_D, i)
            current = tuple(tokens[i + 1 : end])
            texts[current], knots[current] = [], []
            i = end + 1
        elif token == OPEN_S:
            end = tokens.index(CLOSE_S, i)
            body, ids, item = tokens[i + 1 : end], [], []
            for t in body + [SEP]:
                if t == SEP:
                    ids.append(tuple(item))
                    item = []
                else:
                    item.append(t)
            traces.append(ids)
            i = end + 1
        elif token in MARKERS.knots:
            knots[current].append(MARKERS.knots.index(token))
            i += 1
        else:
            texts[current].append(token)
            i += 1
    restored = []
    for ids in traces:
        for q, piece in enumerate(ids):  # piece q opens with knot 2(q-1)+1 and closes with knot 2q
            expected = ([2 * (q - 1) + 1] if q else []) + ([2 * q] if q < len(ids) - 1 else [])
            assert knots[piece] == expected, (q, knots[piece])
        restored.append(tuple(t for piece in ids for t in texts[piece]))
    return restored


def test_untying_keeps_every_token_and_the_trace_restores_each_document():
    docs = documents()
    for seed in range(20):
        row = untie(docs, np.random.default_rng(seed), MARKERS, pieces=3, keep_order=seed % 2 == 0)
        assert sorted(restore(row.tokens)) == sorted(d.tokens for d in docs)
        text = [t for t, kind in zip(row.tokens, row.kinds, strict=True) if kind == TEXT]
        assert sorted(text) == sorted(t for d in docs for t in d.tokens), "every token kept, none added"
        assert text[-len(docs[-1].tokens) // 3 :] == list(docs[-1].tokens[-len(docs[-1].tokens) // 3 :]), (
            "the last piece of the last document stays last"
        )


def test_the_shuffle_interleaves_documents_and_keeps_each_documents_piece_order():
    docs = documents()
    owner = {t: d for d, doc in enumerate(docs) for t in doc.tokens}
    interleaved = 0
    for seed in range(20):
        row = untie(docs, np.random.default_rng(seed), MARKERS, pieces=3, keep_order=True)
        text = [t for t, kind in zip(row.tokens, row.kinds, strict=True) if kind == TEXT]
        for d, doc in enumerate(docs):
            assert [t for t in text if owner[t] == d] == list(doc.tokens), "each document's tokens in order"
        runs = [owner[t] for j, t in enumerate(text) if j == 0 or owner[t] != owner[text[j - 1]]]
        interleaved += len(runs) > len(docs)
    assert interleaved >= 15, "pieces of different documents interleave"


def test_labels_score_text_and_trace_but_not_knots_or_ids():
    docs = [Document(doc.tokens, loss_start=4) for doc in documents()]
    row = untie(docs, np.random.default_rng(3), MARKERS, pieces=3)
    labels = row.labels()
    tokens = row.tokens
    in_summary = in_prefix = False
    for j, (token, label) in enumerate(zip(tokens, labels, strict=True)):
        before = tokens[j - 1] if j else None
        if token == OPEN_D:
            in_prefix = True
        if token == OPEN_S:
            in_summary = True
        if token in MARKERS.knots or before in MARKERS.knots or in_prefix or before in (CLOSE_D, CLOSE_S):
            assert label == IGNORE, (j, token)
        elif token == OPEN_S:
            assert label == IGNORE
        elif in_summary:
            assert label == token, "the trace (ids, <s>, </S>) is the retrieval target"
        if token == CLOSE_D:
            in_prefix = False
        if token == CLOSE_S:
            in_summary = False
    text = [(t, label) for t, label, kind in zip(tokens, labels, row.kinds, strict=True) if kind == TEXT]
    starts = {doc.tokens[k] for doc in docs for k in range(4)}
    assert all(label == IGNORE for token, label in text if token in starts), "before loss_start: context only"
    scored = sum(label != IGNORE for _, label in text)
    assert scored >= sum(len(d.tokens) - 4 for d in docs) - 3 * len(docs), "all other text but a piece's first token"


def test_rows_without_a_cut_are_whole_documents_without_markers():
    docs = documents()
    row = untie(docs, np.random.default_rng(0), MARKERS, pieces=1)
    assert all(t < VOCAB for t in row.tokens)
    assert sorted(row.tokens) == sorted(t for d in docs for t in d.tokens)


def test_rows_are_exactly_the_length_interleave_documents_and_drop_nothing():
    docs = documents((150, 150, 150, 150, 150, 150), seed=1)
    stream, pending, cost = iter(docs), [], overhead(3, True, 6)
    assert cost == 4 + 3 * 8 + 2 + 18 + 2
    rng, seen = np.random.default_rng(0), []
    for cut_row in [True, False, True, True, False]:
        group, counts = fill(stream, pending, 128, 3 if cut_row else 1, cost, 64)
        row = untie(group, rng, MARKERS, pieces=counts)
        assert len(row.tokens) == 128 and len(row.labels()) == 128
        if cut_row:
            assert len(group) >= 2 and all(len(g.tokens) <= 64 for g, c in zip(group, counts, strict=True) if c > 1)
        seen.extend(t for t, kind in zip(row.tokens, row.kinds, strict=True) if kind == TEXT)
    left = [t for d in pending for t in d.tokens] + [t for d in stream for t in d.tokens]
    assert sorted(seen + left) == sorted(t for d in docs for t in d.tokens), "every token in a row or still to come"


def test_prepare_adds_distinct_marker_rows_and_a_step_runs(tiny):
    model = copy.deepcopy(tiny.model)
    vocabulary = model.config.vocab_size
    recipe = recipe_from_spec("utk:split=1")
    recipe.prepare(model, 128)
    embeddings = model.get_input_embeddings().weight
    assert embeddings.shape[0] == vocabulary + recipe.added_tokens == vocabulary + 9
    added = embeddings[vocabulary:]
    assert torch.cdist(added, added).add(torch.eye(9) * 1e9).min() > 1e-2, "each marker is its own token"
    docs = documents((100, 150, 90, 160, 120, 80), seed=2)
    batches = list(recipe.batches(iter(docs), 128, np.random.default_rng(0)))
    assert all(b.input_ids.shape == (1, 128) and b.attention_mask is None for b in batches)
    assert any((b.input_ids >= vocabulary).any() for b in batches)
    loss = recipe.loss(model, batches[0])
    loss.backward()
    assert torch.isfinite(loss) and model.get_input_embeddings().weight.grad is not None


def test_one_step_through_the_training_loop_and_the_folder_loads_with_the_added_rows(tmp_path):
    from longreach.methods import parse_stack
    from longreach.models import load_model
    from longreach.train.loop import TrainConfig, train

    config = TrainConfig("tiny-llama", "utk:split=1", "tasks:passkey", 128, 1, tmp_path / "run", batch_tokens=256,
                         quiet=True)  # fmt: skip
    summary = train(config)
    assert summary.steps == 1 and np.isfinite(summary.final_loss) and summary.final_loss > 0
    loaded = load_model(str(summary.model_dir), "fp32")
    assert loaded.model.get_input_embeddings().weight.shape[0] == 1024 + 9
    ids = torch.randint(5, 1000, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), parse_stack("yarn:factor=2").applied(loaded):
        assert torch.isfinite(loaded.model(ids).logits).all()
