"""Each training recipe on tiny-llama: one training step runs from its spec, and its defining property holds."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from longreach.methods.positions.base import base_inv_freq
from longreach.models import adapter, load_model
from longreach.models.tiny import TINY_WINDOW, tiny_llama, tiny_tokenizer
from longreach.train.data import open_documents
from longreach.train.loop import TrainConfig, train
from longreach.train.recipe import IGNORE, Document, recipe_from_spec
from longreach.train.recipes.decompose import decompose


def train_one_step(tmp_path, recipe: str, data: str = "tasks:passkey", length: int = 128, **extra):
    config = TrainConfig(
        "tiny-llama", recipe, data, length, 1, tmp_path / "run", batch_tokens=length, dtype="fp32", quiet=True, **extra
    )
    summary = train(config)
    assert summary.steps == 1 and math.isfinite(summary.final_loss)
    return summary


def rotary(model):
    return adapter.rotary_module(model)


# ---- abf ---------------------------------------------------------------------------------------------------------


def test_abf_raises_the_base_and_the_saved_folder_keeps_it(tmp_path):
    model = tiny_llama(torch.float32)
    recipe_from_spec("abf:theta=500000").prepare(model, 128)
    assert torch.allclose(rotary(model).inv_freq, base_inv_freq(500000.0, 16))
    summary = train_one_step(tmp_path, "abf:theta=500000")
    saved = json.loads((summary.model_dir / "config.json").read_text())
    assert saved["rope_parameters"]["rope_theta"] == 500000.0
    loaded = load_model(str(summary.model_dir), "fp32")
    assert torch.allclose(rotary(loaded.model).inv_freq, base_inv_freq(500000.0, 16))


def test_abf_scale_multiplies_the_models_base():
    model = tiny_llama(torch.float32)
    recipe_from_spec("abf:scale=8").prepare(model, 128)
    assert model.config.rope_parameters["rope_theta"] == 80000.0  # tiny-llama's base is 10000


# ---- pi and yarn: transformers' own rope functions are the oracle --------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "rope_type"),
    [("pi:factor=4", "linear"), ("yarn:factor=4", "yarn"), ("yarn:factor=2:beta_fast=16", "yarn")],
)
def test_pi_and_yarn_match_transformers_rope_init_functions(spec, rope_type):
    model = tiny_llama(torch.float32)
    recipe_from_spec(spec).prepare(model, 128)
    params = model.config.rope_parameters
    assert params["rope_type"] == rope_type
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](model.config, None)
    module = rotary(model)
    assert torch.allclose(module.inv_freq, inv_freq)
    assert module.attention_scaling == pytest.approx(scaling)
    assert model.config.max_position_embeddings == TINY_WINDOW * params["factor"]
    if rope_type == "yarn":
        assert scaling == pytest.approx(0.1 * math.log(params["factor"]) + 1)
        assert params["original_max_position_embeddings"] == TINY_WINDOW
    else:
        assert torch.allclose(module.inv_freq, base_inv_freq(10000.0, 16) / 4)


@pytest.mark.parametrize("spec", ["pi:factor=2", "yarn:factor=2"])
def test_pi_and_yarn_train_a_step_and_the_folder_keeps_the_scaling(tmp_path, spec):
    summary = train_one_step(tmp_path, spec)
    loaded = load_model(str(summary.model_dir), "fp32")
    expected = tiny_llama(torch.float32)
    recipe_from_spec(spec).prepare(expected, 128)
    assert torch.allclose(rotary(loaded.model).inv_freq, rotary(expected).inv_freq)
    assert rotary(loaded.model).attention_scaling == pytest.approx(rotary(expected).attention_scaling)
    assert loaded.native_context_length == 2 * TINY_WINDOW


def test_rope_recipes_refuse_bad_knobs():
    from longreach.errors import LongreachError

    for spec, message in [("pi:factor=0.5", "factor must be >= 1"), ("yarn:beta_fast=1", "beta_fast > beta_slow")]:
        with pytest.raises(LongreachError, match=message):
            recipe_from_spec(spec)


# ---- prolong -----------------------------------------------------------------------------------------------------


def test_prolong_masks_attention_across_documents_and_restarts_positions():
    recipe = recipe_from_spec("prolong")
    documents = open_documents("tasks:passkey+short:passkey", tiny_tokenizer(), 512, 0, mix=recipe.mix())
    rows = list(itertools.islice(recipe.batches(documents, 512, np.random.default_rng(0)), 6))
    boundaries = 0
    for row in rows:
        ids, mask, positions = row.extras["document_ids"][0], row.attention_mask[0, 0], row.position_ids[0]
        across = ids[:, None] != ids[None, :]  # (q, k): query and key in different documents
        assert not mask[across].any()
        assert torch.equal(mask, mask & torch.ones_like(mask).tril())
        starts = torch.nonzero(torch.diff(ids)).flatten() + 1
        assert (positions[starts] == 0).all() and (row.labels[0, starts] == IGNORE).all()
        boundaries += len(starts)
    assert boundaries > 0  # short documents were packed next to long ones


def test_prolong_mixes_long_and_short_documents_at_its_token_share():
    recipe = recipe_from_spec("prolong")
    documents = open_documents("tasks:passkey+short:passkey", tiny_tokenizer(), 1024, 0, mix=recipe.mix())
    tokens = {"long": 0, "short": 0}
    for document in itertools.islice(documents, 60):
        tokens[document.kind] += len(document.tokens)
    share = tokens["long"] / sum(tokens.values())
    assert share == pytest.approx(0.6, abs=0.03)


def test_prolong_trains_a_step_and_needs_short_data(tmp_path):
    from longreach.errors import LongreachError

    train_one_step(tmp_path, "prolong", "tasks:passkey+short:passkey", 512)
    with pytest.raises(LongreachError, match="no short source"):
        train_one_step(tmp_path / "b", "prolong", "tasks:passkey", 512)


# ---- decompose ---------------------------------------------------------------------------------------------------


def test_decomposition_is_the_binary_expansion_and_keeps_every_token():
    document = Document(tuple(range(1000 + 300)), loss_start=600)  # 1300 = 1024 + 256 + 16 + 4
    chunks = decompose(document, 2, 12)
    assert [len(c.tokens) for c in chunks] == [1024, 256, 16, 4]
    assert sum(len(c.tokens) for c in chunks) == 1300
    assert [c.tokens[0] for c in chunks] == [0, 1024, 1280, 1296]
    assert [c.loss_start for c in chunks] == [600, 0, 0, 0]
    capped = decompose(Document(tuple(range(70))), 4, 5)  # 32 + 32 + 6: the remainder below 2^4 is dropped
    assert [len(c.tokens) for c in capped] == [32, 32]


def _documents(seed: int, count: int) -> list[Document]:
    rng = np.random.default_rng(seed)
    return [Document(tuple(int(t) for t in rng.integers(0, 1000, int(n)))) for n in rng.integers(16, 600, count)]


def test_decompose_steps_hold_one_power_of_two_length_and_constant_tokens():
    recipe = recipe_from_spec("decompose:min_log2=4:cycle=4")
    steps = list(recipe.steps(iter(_documents(0, 200)), 256, 512, np.random.default_rng(0)))
    assert len(steps) > 20
    lengths = set()
    for step in steps:
        widths = {batch.input_ids.shape[1] for batch in step}
        assert len(widths) == 1  # one bucket per step
        (width,) = widths
        assert width & (width - 1) == 0 and 16 <= width <= 256
        assert sum(batch.tokens for batch in step) == 512  # constant tokens per step, batch size varies
        assert all(batch.tokens <= 256 for batch in step)  # forward passes of at most --length tokens
        lengths.add(width)
    assert len(lengths) >= 4  # variable sequence length


def test_decompose_preserves_tokens_up_to_the_remainders():
    documents = _documents(1, 50)
    chunks = [c for d in documents for c in decompose(d, 4, 8)]
    dropped = sum(len(d.tokens) for d in documents) - sum(len(c.tokens) for c in chunks)
    assert 0 <= dropped < 16 * len(documents)
    assert sorted(t for c in chunks for t in c.tokens) == sorted(
        t for d in documents for t in d.tokens[: sum(len(c.tokens) for c in decompose(d, 4, 8))]
    )


def test_decompose_curriculum_goes_short_to_long_within_a_cycle():
    sorted_recipe = recipe_from_spec("decompose:min_log2=4:cycle=1000:curriculum=sorted")
    steps = list(sorted_recipe.steps(iter(_documents(2, 300)), 256, 256, np.random.default_rng(0)))
    widths = [step[0].input_ids.shape[1] for step in steps]
    assert widths == sorted(widths) and widths[0] < widths[-1]
    grow = recipe_from_spec("decompose:min_log2=4:cycle=1000")
    widths = [s[0].input_ids.shape[1] for s in grow.steps(iter(_documents(2, 300)), 256, 256, np.random.default_rng(0))]
    half = len(widths) // 2
    assert np.mean(np.log2(widths[:half])) < np.mean(np.log2(widths[half:])) - 0.5  # Grow-P2: short first


def test_decompose_refuses_a_bucket_longer_than_the_length():
    from longreach.errors import LongreachError

    with pytest.raises(LongreachError, match="exceeds --length"):
        next(recipe_from_spec("decompose:max_log2=9").steps(iter(_documents(0, 5)), 256, 256, None))


def test_decompose_trains_a_step(tmp_path):
    summary = train_one_step(tmp_path, "decompose:min_log2=4", "tasks:passkey", 128)
    record = json.loads((summary.out / "train.json").read_text())
    assert record["step_tokens"] == [128]
