"""``e2`` (E²-LLM): batches sample several scales and offsets inside the declared ranges, and a step reads with
exactly that scale (position interpolation by g, what ``linear:factor=g`` applies at evaluation)."""

from __future__ import annotations

import json

import numpy as np
import torch

from longreach.methods import parse_stack
from longreach.train.recipe import Document, causal_lm_loss, recipe_from_spec
from longreach.train.recipes.e2 import SCALE, e2_positions

LENGTH = 64


def documents(n=40, size=100):
    rng = np.random.default_rng(1)
    return [Document(tuple(int(t) for t in rng.integers(5, 1000, size))) for _ in range(n)]


def test_positions_are_two_runs_with_an_offset_below_g_times_the_length():
    rng = np.random.default_rng(0)
    for scale in (1, 2, 5):
        for _ in range(50):
            positions = e2_positions(LENGTH, scale, rng)
            steps = np.diff(positions)
            assert (steps >= 1).all() and (steps > 1).sum() <= 1, "one cut at most; distances kept inside a segment"
            assert positions[0] == 0 and positions[-1] < scale * LENGTH
    assert (e2_positions(LENGTH, 1, rng) == np.arange(LENGTH)).all()
    assert (e2_positions(LENGTH, 4, rng, offset=False) == np.arange(LENGTH)).all()


def test_batches_sample_several_scales_and_offsets_in_range():
    recipe = recipe_from_spec("e2:min_scale=2:max_scale=5")
    batches = list(recipe.batches(iter(documents()), LENGTH, np.random.default_rng(0)))
    scales = [int(b.extras[SCALE]) for b in batches]
    assert len(batches) == 62 and set(scales) == {2, 3, 4, 5}
    offsets = set()
    for batch, scale in zip(batches, scales, strict=True):
        positions = batch.position_ids[0]
        assert positions.max() < scale * LENGTH
        offsets.add(int((positions[1:] - positions[:-1]).max()) - 1)
    assert len(offsets) > 20, "offsets vary from batch to batch"


def test_a_step_reads_with_the_batch_scale_and_positions(tiny):
    recipe = recipe_from_spec("e2:max_scale=4")
    batch = next(b for b in recipe.batches(iter(documents()), LENGTH, np.random.default_rng(3)) if b.extras[SCALE] > 1)
    scale = float(batch.extras[SCALE])
    assert batch.position_ids.max() >= LENGTH, "this batch's second segment is offset"
    ours = recipe.loss(tiny.model, batch)
    with parse_stack(f"linear:factor={scale:g}").applied(tiny):
        expected = causal_lm_loss(tiny.model, batch)
    assert torch.equal(ours, expected), "position interpolation by g at the batch's position ids"
    assert not torch.equal(ours, causal_lm_loss(tiny.model, batch)), "and not the unscaled model"


def test_finish_records_the_training_length_and_scales(tmp_path, tiny):
    recipe = recipe_from_spec("e2:max_scale=3")
    recipe.prepare(tiny.model, LENGTH)
    recipe.finish(tiny.model, tmp_path)
    note = json.loads((tmp_path / "e2.json").read_text())
    assert note["train_length"] == LENGTH and note["scales"] == [1, 2, 3]


def test_one_step_through_the_training_loop_and_eval_reads_with_linear_g(tmp_path):
    from longreach.models import load_model
    from longreach.train.loop import TrainConfig, train

    config = TrainConfig("tiny-llama", "e2:max_scale=4", "tasks:passkey", 128, 1, tmp_path / "run", batch_tokens=128,
                         dtype="fp32", quiet=True)  # fmt: skip
    summary = train(config)
    assert summary.steps == 1 and np.isfinite(summary.final_loss)
    assert json.loads((summary.model_dir / "e2.json").read_text())["train_length"] == 128
    loaded = load_model(str(summary.model_dir), "fp32")
    ids = torch.randint(5, 1000, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), parse_stack("linear:factor=4").applied(loaded):
        assert torch.isfinite(loaded.model(ids).logits).all()
