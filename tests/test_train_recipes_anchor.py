"""``anchor`` (AnchorAttention): every token sees the shared anchor and never another document; positions run over
the whole row; RoPE stays float32 in a bf16 model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers import masked_hidden_states
from longreach.models import adapter
from longreach.train.recipe import (
    IGNORE,
    Document,
    Pieces,
    hidden_states,
    independent_pieces,
    recipe_from_spec,
)
from longreach.train.recipes.anchor import anchor_mask, float32_rope

ANCHOR = 7
DOCS = [
    Document(tuple(range(100, 120))),
    Document((ANCHOR, *range(200, 215)), loss_start=3),
    Document(tuple(range(300, 340))),
]


def rows(length=32, docs=DOCS):
    recipe = recipe_from_spec(f"anchor:token={ANCHOR}")
    return list(recipe.batches(iter(docs), length, np.random.default_rng(0)))


def test_every_token_sees_the_anchor_and_only_its_own_document():
    for row in rows():
        mask, ids = row.attention_mask[0, 0], row.extras["document_ids"][0]
        assert row.input_ids[0, 0] == ANCHOR and ids[0] == 0 and not (ids[1:] == 0).any()
        t = ids.shape[0]
        for q in range(t):
            for k in range(t):
                allowed = k <= q and (k == 0 or bool(ids[q] == ids[k]))
                assert bool(mask[q, k]) == allowed, (q, k)
        assert mask[:, 0].all(), "the anchor is visible to every query"


def test_positions_run_over_the_row_and_documents_keep_their_tokens():
    first, second = rows()
    assert first.position_ids[0].tolist() == list(range(32))
    # the second document's leading anchor token is dropped (one shared anchor per row)
    body = torch.cat([first.input_ids[0, 1:], second.input_ids[0, 1:]]).tolist()
    assert body == [*range(100, 120), *range(200, 215), *range(300, 327)]
    labels = first.labels[0].tolist()
    assert labels[0] == IGNORE and labels[1] == IGNORE, "the anchor and a document's first token are not scored"
    assert labels[21:23] == [IGNORE, IGNORE] and labels[23] == 202, "loss_start 3 of (anchor, 200, 201, ...) is 202"


def test_anchor_mask_of_a_plain_row():
    mask = anchor_mask(torch.tensor([[0, 1, 1, 2]]))[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]]


def test_through_the_model_a_document_depends_on_the_anchor_and_not_on_other_documents(tiny):
    (row,) = rows(36, [Document(tuple(range(100, 120))), Document(tuple(range(200, 220)))])
    second = row.extras["document_ids"][0] == 2
    base = hidden_states(tiny.model, row)[0, second]
    other = copy.deepcopy(row)
    other.input_ids[0, 1:10] = 555  # change the first document
    assert torch.allclose(hidden_states(tiny.model, other)[0, second], base, atol=1e-5)
    other = copy.deepcopy(row)
    other.input_ids[0, 0] = 555  # change the anchor
    assert not torch.allclose(hidden_states(tiny.model, other)[0, second], base, atol=1e-3)


def test_an_anchored_row_runs_as_anchor_plus_document_with_the_masks_result(tiny):
    first, second = rows()
    assert independent_pieces(first) == Pieces(1, ((1, 21), (21, 32)))  # anchor | 20 tokens | 11 of the second
    for row in (first, second):
        assert torch.allclose(hidden_states(tiny.model, row), masked_hidden_states(tiny.model, row), atol=1e-5)


def test_bf16_rope_drifts_at_long_positions_and_prepare_restores_the_float32_reference(tiny):
    """A bf16 cast rounds RoPE's inverse frequencies: angles at 30K are off by radians. prepare() recomputes them
    in float32, after which the rotary output is exactly the float32 reference cast once to bf16."""
    positions = torch.tensor([[100, 1000, 30000, 100000]])
    reference_cos, reference_sin = adapter.rotary_module(tiny.model)(torch.zeros(1), positions)  # float32 model
    model = copy.deepcopy(tiny.model).to(torch.bfloat16)
    rotary = adapter.rotary_module(model)
    assert rotary.inv_freq.dtype == torch.bfloat16
    cos, _ = rotary(torch.zeros(1, dtype=torch.bfloat16), positions)
    drift = (cos.float() - reference_cos).abs().amax(-1)[0]
    assert drift[0] < 0.02 and drift[2] > 0.5, f"bf16 RoPE drifts with position: {drift.tolist()}"
    recipe = recipe_from_spec("anchor")
    recipe.prepare(model, 64)
    assert rotary.inv_freq.dtype == torch.float32
    cos, sin = rotary(torch.zeros(1, dtype=torch.bfloat16), positions)
    assert torch.equal(cos, reference_cos.to(torch.bfloat16)) and torch.equal(sin, reference_sin.to(torch.bfloat16))
    assert recipe.anchor() == tiny.tokenizer.eos_token_id, "tiny-llama has no BOS: the anchor is its EOS"
    assert not float32_rope(model), "a second call changes nothing"


def test_the_anchor_comes_from_prepare_unless_given():
    with pytest.raises(Exception, match="prepare"):
        list(recipe_from_spec("anchor").batches(iter(DOCS), 32, np.random.default_rng(0)))


def test_one_step_through_the_training_loop_in_bf16_and_the_folder_stacks_a_position_method(tmp_path):
    from longreach.methods import parse_stack
    from longreach.models import load_model
    from longreach.train.loop import TrainConfig, train

    config = TrainConfig(
        "tiny-llama", "anchor", "tasks:passkey", 128, 1, tmp_path / "run", batch_tokens=256, quiet=True
    )
    summary = train(config)  # LoRA r=16 over bf16 weights, the loop's defaults
    assert summary.steps == 1 and summary.tokens == 256 and np.isfinite(summary.final_loss)
    loaded = load_model(str(summary.model_dir), "fp32")
    ids = torch.randint(5, 1000, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), parse_stack("yarn:factor=2").applied(loaded):
        assert torch.isfinite(loaded.model(ids).logits).all()
