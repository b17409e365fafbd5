"""The training-recipe interface: packing (concat-and-chunk and document-masked), masks, step grouping, the loss,
and the registry's contract (every recipe parses its example, describes its knobs and runs one step)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers import masked_hidden_states
from longreach.errors import LongreachError
from longreach.train.recipe import (
    IGNORE,
    RECIPES,
    Document,
    Pieces,
    TrainBatch,
    causal_lm_loss,
    document_mask,
    group_steps,
    hidden_states,
    independent_pieces,
    pack,
    recipe_from_spec,
    recipe_rows,
)

DOCS = [Document(tuple(range(10, 15)), loss_start=2), Document(tuple(range(20, 27))), Document(tuple(range(30, 34)))]


def test_document_mask_is_causal_and_blocks_other_documents():
    mask = document_mask(torch.tensor([[0, 0, 1, 1, 1]]))
    assert mask.shape == (1, 1, 5, 5) and mask.dtype == torch.bool
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(mask[0, 0], expected)


def test_concat_and_chunk_keeps_every_token_in_order_with_running_positions():
    rows = list(pack(iter(DOCS), 6, None, masked=False))
    assert [r.input_ids.shape for r in rows] == [(1, 6), (1, 6)]  # 16 tokens: the last 4 are an incomplete row
    flat = torch.cat([r.input_ids[0] for r in rows]).tolist()
    assert flat == [t for d in DOCS for t in d.tokens][:12]
    assert all(r.position_ids[0].tolist() == list(range(6)) for r in rows)
    assert all(r.attention_mask is None for r in rows)
    assert rows[0].labels[0].tolist() == [IGNORE, IGNORE, 12, 13, 14, 20]  # before loss_start: context only


def test_masked_packing_restarts_positions_and_leaves_document_starts_unscored():
    rows = list(pack(iter(DOCS), 6, None, masked=True))
    first, second = rows
    assert first.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0]
    assert first.extras["document_ids"][0].tolist() == [0, 0, 0, 0, 0, 1]
    assert first.labels[0].tolist() == [IGNORE, IGNORE, 12, 13, 14, IGNORE]
    # the second document continues in the next row as a new piece at position 0
    assert second.input_ids[0].tolist() == [21, 22, 23, 24, 25, 26]
    assert second.position_ids[0].tolist() == list(range(6))
    assert second.labels[0, 0] == IGNORE
    assert not first.attention_mask[0, 0, 5, :5].any()  # the new document sees nothing of the previous one


def test_pack_refuses_a_length_below_two():
    with pytest.raises(LongreachError, match="at least 2"):
        list(pack(iter(DOCS), 1, None, masked=False))


def test_group_steps_accumulates_to_the_token_budget():
    rows = list(pack(iter([Document(tuple(range(100)))]), 10, None, masked=False))
    steps = list(group_steps(iter(rows), 25))
    assert [len(s) for s in steps] == [3, 3, 3, 1]  # 30 >= 25 tokens per step; the tail step is kept


def test_loss_matches_transformers_own_labels_loss(tiny):
    ids = torch.randint(0, 1000, (1, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[0, :7] = IGNORE
    batch = TrainBatch(ids, labels, torch.arange(40)[None])
    ours = causal_lm_loss(tiny.model, batch)
    reference = tiny.model(input_ids=ids, labels=labels).loss
    assert torch.allclose(ours, reference.float(), atol=1e-5)
    assert batch.scored == 40 - 7


def test_chunked_loss_of_a_long_row_equals_the_whole_loss(tiny, monkeypatch):
    import longreach.train.recipe as recipe_module

    ids = torch.randint(0, 1000, (2, 50), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :9] = IGNORE
    batch = TrainBatch(ids, labels, torch.arange(50).expand(2, 50))
    whole = causal_lm_loss(tiny.model, batch)
    monkeypatch.setattr(recipe_module, "LOGIT_CHUNK", 8)  # 7 chunks, the first scoring nothing
    assert torch.allclose(causal_lm_loss(tiny.model, batch), whole, atol=1e-5)


def test_document_masked_loss_equals_separate_documents(tiny):
    """Packed with masks and restarted positions, each document's loss is what it gets alone."""
    a, b = Document(tuple(range(100, 120))), Document(tuple(range(200, 212)))
    (row,) = list(pack(iter([a, b]), 32, None, masked=True))
    packed = causal_lm_loss(tiny.model, row) * row.scored
    alone = 0.0
    for doc in (a, b):
        ids = torch.tensor([doc.tokens])
        alone += causal_lm_loss(tiny.model, TrainBatch(ids, ids.clone(), torch.arange(ids.shape[1])[None])) * (
            ids.shape[1] - 1
        )
    assert torch.allclose(packed, alone, rtol=1e-4)


def test_bad_recipe_specs_fail_in_one_line_with_the_valid_options():
    with pytest.raises(LongreachError, match="did you mean 'plain'"):
        recipe_from_spec("plan")
    with pytest.raises(LongreachError, match="unknown parameter"):
        recipe_from_spec("plain:theta=5")


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_parses_its_example_and_describes_itself(name):
    cls = RECIPES.get(name)
    recipe = recipe_from_spec(cls.example or name)
    assert recipe.name == name and cls.summary and cls.paper
    assert recipe_from_spec(recipe.spec) == recipe  # the canonical spec round-trips
    assert any(row[0] == name for row in recipe_rows())


def test_default_steps_pack_without_masks():
    recipe = recipe_from_spec("plain")
    steps = list(recipe.steps(iter([Document(tuple(range(64)))]), 16, 32, np.random.default_rng(0)))
    assert [len(s) for s in steps] == [2, 2]


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_trains_one_step_on_tiny_llama_from_its_example(tmp_path, name):
    """The contract: a registered recipe runs a step from its example spec and writes a folder that loads."""
    from longreach.models import load_model
    from longreach.train.loop import TrainConfig, train

    cls = RECIPES.get(name)
    recipe = recipe_from_spec(cls.example or name)
    data = cls.example_data or ("tasks:passkey+short:passkey" if (recipe.mix() or {}).get("short") else "tasks:passkey")
    config = TrainConfig("tiny-llama", recipe.spec, data, 256, 1, tmp_path, batch_tokens=256, dtype="fp32", quiet=True)
    summary = train(config)
    assert summary.steps == 1 and math.isfinite(summary.final_loss)
    assert load_model(str(summary.model_dir), "fp32").model is not None


def test_eager_attention_gets_an_additive_document_mask():
    from longreach.models.tiny import tiny_llama

    model = tiny_llama(torch.float32)
    model.set_attn_implementation("eager")
    a, b = Document(tuple(range(100, 120))), Document(tuple(range(200, 212)))
    (row,) = list(pack(iter([a, b]), 32, None, masked=True))
    sdpa = tiny_llama(torch.float32)
    assert torch.allclose(masked_hidden_states(model, row), masked_hidden_states(sdpa, row), atol=1e-5)
    assert sdpa.config._attn_implementation == "sdpa"


def test_a_document_masked_row_runs_as_its_documents_with_the_masks_result(tiny):
    docs = [Document(tuple(range(100, 120))), Document(tuple(range(200, 205))), Document(tuple(range(300, 340)))]
    rows = list(pack(iter(docs), 32, None, masked=True))
    assert independent_pieces(rows[0]) == Pieces(0, ((0, 20), (20, 25), (25, 32)))
    assert independent_pieces(rows[1]) == Pieces(0, ((0, 32),))  # the rest of the third document
    for row in rows:
        assert torch.allclose(hidden_states(tiny.model, row), masked_hidden_states(tiny.model, row), atol=1e-5)


def test_a_mask_of_another_form_is_not_read_as_pieces():
    (row,) = list(
        pack(iter([Document(tuple(range(100, 120))), Document(tuple(range(200, 212)))]), 32, None, masked=True)
    )
    row.attention_mask[0, 0, 25, 3] = True  # one query of the second document sees the first
    assert independent_pieces(row) is None
    row.attention_mask = None
    assert independent_pieces(row) is None


def test_a_long_row_is_checked_in_every_block_of_queries():
    docs = [Document(tuple(range(1000, 1700))), Document(tuple(range(2000, 3000)))]
    (row,) = list(pack(iter(docs), 1500, None, masked=True))
    assert independent_pieces(row) == Pieces(0, ((0, 700), (700, 1500)))
    row.attention_mask[0, 0, 1400, 100] = True  # past the first 1024 queries
    assert independent_pieces(row) is None


@pytest.mark.parametrize(
    "positions",
    [list(range(32)), [*range(16), *range(116, 132)], sorted(np.random.default_rng(0).choice(256, 32, replace=False))],
    ids=["plain", "one cut (E2-LLM)", "sampled gaps (CLEX)"],
)
def test_a_row_is_one_causal_sequence_whatever_its_positions(tiny, positions):
    """transformers reads a jump in position ids as the start of another packed sequence when no mask is given;
    a training row without a mask must stay one causal sequence: the reference is an explicit (t, t) causal mask."""
    ids, position_ids = torch.arange(100, 132)[None], torch.tensor([positions])
    ours = hidden_states(tiny.model, TrainBatch(ids, ids.clone(), position_ids))
    causal = torch.ones(1, 1, 32, 32, dtype=torch.bool).tril()
    reference = tiny.model.model(ids, position_ids=position_ids, attention_mask=causal).last_hidden_state
    assert torch.allclose(ours, reference, atol=1e-5)
    changed = ids.clone()
    changed[0, 3] = 555
    later = hidden_states(tiny.model, TrainBatch(changed, changed.clone(), position_ids))[0, 20:]
    assert not torch.allclose(later, ours[0, 20:], atol=1e-3), "the last tokens see the fourth"
