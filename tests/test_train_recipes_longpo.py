"""``longpo`` (LongPO): the chosen answer is the model's answer from the short chunk, the rejected one its answer from
the whole document; the loss is DPO on short-to-long log-ratios (checked by hand) plus the NLL term."""

from __future__ import annotations

import copy
import math
import types

import numpy as np
import pytest
import torch

from longreach.train.recipe import Document, recipe_from_spec
from longreach.train.recipes.longpo import SHORT, dpo_loss, longpo_loss, pair_inputs
from longreach.train.shared_context import answer_logps, shared_context_row

SPEC = "longpo:chunk=64:cue=8:answer=4"


def documents(n=3, size=400):
    rng = np.random.default_rng(0)
    return [Document(tuple(int(t) for t in rng.integers(5, 1000, size))) for _ in range(n)]


def test_pairs_hold_a_chunk_of_the_document_and_a_cue_copied_from_it():
    rng = np.random.default_rng(1)
    (doc,) = documents(1)
    long, short = pair_inputs(doc, 256, 64, 8, 4, rng)
    assert len(long) == 256 - 4 and long[:244] == list(doc.tokens[:244])
    chunk, cue = short[:64], short[64:]
    assert len(short) == 72 and long[-8:] == cue
    start = next(i for i in range(244 - 63) if long[i : i + 64] == chunk)
    at = next(i for i in range(64 - 8 + 1) if chunk[i : i + 8] == cue)
    assert at + 8 + 4 <= 64 and start + 64 <= 244, "the cue's true continuation lies inside the chunk"
    assert pair_inputs(Document(doc.tokens[:100]), 256, 64, 8, 4, rng) is None, "too short for a long context"


def test_chosen_comes_from_the_short_context_and_rejected_from_the_long_one(tiny):
    recipe = recipe_from_spec(SPEC)
    recipe.prepare(tiny.model, 256)
    batch = next(recipe.batches(iter(documents()), 256, np.random.default_rng(0)))
    pair = recipe.pair(tiny.model, batch)
    for context, answer in ((batch.extras[SHORT], pair["chosen"]), (batch.input_ids, pair["rejected"])):
        with torch.no_grad():
            expected = tiny.model.generate(
                context, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0
            )[:, context.shape[1] :]
        assert torch.equal(answer, expected)
    both = torch.cat([pair["chosen"], pair["rejected"]])
    ref = answer_logps(tiny.model, batch.extras[SHORT], both)
    assert torch.allclose(torch.cat([pair["ref_chosen"], pair["ref_rejected"]]), ref), "the reference reads x_S"


def test_the_loss_is_dpo_on_fixed_logits_by_hand():
    """Two answers of two tokens over a 3-token vocabulary, fixed logits: sequence log-probs and the loss by hand."""
    # the packed row keeps b a + 1 logits: the context's last position, then each answer's tokens
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [9.0, 9.0, 9.0], [0.0, 1.0, 0.0], [9.0, 9.0, 9.0]]])

    class Stub(torch.nn.Module):  # a causal LM on sdpa whose kept logits are fixed
        config = types.SimpleNamespace(_attn_implementation="sdpa")

        def set_attn_implementation(self, name):
            pass

        def __call__(self, input_ids, logits_to_keep, **kwargs):
            assert input_ids.shape == (1, 2 + 4) and logits_to_keep == 5
            return types.SimpleNamespace(logits=logits)

    model = Stub()
    logps = answer_logps(model, torch.tensor([[5, 6]]), torch.tensor([[0, 1], [1, 2]]))
    z0, z1 = math.log(math.exp(2) + 2), math.log(math.e + 2)
    expected = [(2 - z0) + (1 - z1), (0 - z0) + (0 - z1)]
    assert logps.tolist() == pytest.approx(expected, abs=1e-6)
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = -3.0, -5.0, -4.0, -4.5
    beta, lam, answer = 0.1, 0.01, 2
    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))  # 0.1 * (1 - (-0.5)) = 0.15
    by_hand = -math.log(1 / (1 + math.exp(-margin))) + lam * (-policy_chosen / answer)
    ours = longpo_loss(*(torch.tensor([v]) for v in (policy_chosen, policy_rejected, ref_chosen, ref_rejected)),
                       beta, lam, answer)  # fmt: skip
    assert float(ours) == pytest.approx(by_hand, rel=1e-6)
    same = dpo_loss(torch.tensor([-2.0]), torch.tensor([-2.0]), torch.tensor([-3.0]), torch.tensor([-3.0]), 0.01)
    assert float(same) == pytest.approx(math.log(2)), "identical chosen and rejected: log 2"


def separate_rows_logps(model, context, answers):
    """The oracle: each answer in its own row [context; answer], log-probs summed (b,)."""
    ids = torch.cat([context.expand(answers.shape[0], -1), answers], dim=1)
    logits = model(input_ids=ids, use_cache=False).logits[:, context.shape[1] - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, answers[..., None])[..., 0].sum(-1)


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_one_shared_context_row_scores_each_answer_as_its_own_row_does(tiny, implementation, monkeypatch):
    model = copy.deepcopy(tiny.model).float().train()
    model.set_attn_implementation(implementation)
    generator = torch.Generator().manual_seed(0)
    context = torch.randint(5, 1000, (1, 48), generator=generator)
    answers = torch.randint(5, 1000, (3, 5), generator=generator)
    import transformers.integrations.sdpa_attention as sdpa

    calls = []
    original = sdpa.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):
        calls.append(query.shape[2])
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", spy)
    packed = answer_logps(model, context, answers)
    layers = model.config.num_hidden_layers
    if implementation == "sdpa":  # split: [context; answer 1] causal, then each other answer's 5 queries
        assert calls == [48 + 5, 5, 5] * layers
    else:
        assert calls == []
    assert model.config._attn_implementation == implementation, "the implementation is restored"
    monkeypatch.undo()
    oracle = separate_rows_logps(model, context, answers)
    assert torch.allclose(packed, oracle, atol=1e-4), (packed, oracle)
    weights = torch.tensor([1.0, -2.0, 0.5])
    packed_grads = torch.autograd.grad((packed * weights).sum(), list(model.parameters()), allow_unused=True)
    oracle_grads = torch.autograd.grad((oracle * weights).sum(), list(model.parameters()), allow_unused=True)
    for ours, theirs in zip(packed_grads, oracle_grads, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-3)


def test_the_shared_context_row_hides_every_answer_from_the_others():
    positions, mask = shared_context_row(3, 2, 2)
    assert positions.tolist() == [[0, 1, 2, 3, 4, 3, 4]]
    rows = mask[0, 0].int().tolist()
    assert rows[2] == [1, 1, 1, 0, 0, 0, 0]
    assert rows[4] == [1, 1, 1, 1, 1, 0, 0], "the first answer's second token: context and its own first token"
    assert rows[5] == [1, 1, 1, 0, 0, 1, 0], "the second answer starts after the context, not after the first"
    assert rows[6] == [1, 1, 1, 0, 0, 1, 1]


def test_a_step_without_lora_uses_the_frozen_copy_and_moves_the_policy(tiny):
    model = copy.deepcopy(tiny.model).train()
    recipe = recipe_from_spec(SPEC)
    recipe.prepare(model, 256)
    batch = next(recipe.batches(iter(documents()), 256, np.random.default_rng(0)))
    loss = recipe.loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    fresh = recipe_from_spec(SPEC)
    fresh.prepare(tiny.model, 256)
    after, before = recipe.pair(model, batch), fresh.pair(tiny.model, batch)
    assert all(torch.equal(after[key], before[key]) for key in after), "pi_S stays the model before training"
    answers = torch.cat([after["chosen"], after["rejected"]])
    with torch.no_grad():
        moved = answer_logps(model, batch.input_ids, answers)
        initial = answer_logps(tiny.model, batch.input_ids, answers)
    assert not torch.allclose(moved, initial), "the step moved the policy"


def test_one_step_through_the_training_loop_with_lora_as_the_reference(tmp_path):
    from longreach.train.loop import TrainConfig, train

    config = TrainConfig("tiny-llama", SPEC, "tasks:passkey", 256, 1, tmp_path / "run", batch_tokens=256,
                         dtype="fp32", quiet=True)  # fmt: skip
    summary = train(config)
    assert summary.steps == 1 and np.isfinite(summary.final_loss)
    assert (summary.model_dir / "model.safetensors").is_file()


def test_a_step_holds_batch_tokens_over_length_pairs():
    recipe = recipe_from_spec(SPEC)
    steps = recipe.steps(iter(documents(7)), 256, 512, np.random.default_rng(0))
    sizes = [len(next(steps)) for _ in range(3)]
    assert sizes == [2, 2, 2], "two pairs of about 256 tokens in a 512-token step, not three of 252"
    single = recipe.steps(iter(documents(2)), 256, 100, np.random.default_rng(0))
    assert len(next(single)) == 1
