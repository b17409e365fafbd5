"""``clex`` (CLEX): the ODE at initialisation is NTK scaling with alpha = 2t - 1 and the identity at t = 1; the
frequencies follow the length read continuously; a training step updates the ODE; the saved ODE is what the
``clex`` position method reads next to the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.methods.positions.base import base_inv_freq
from longreach.methods.positions.clex import FILE_NAME, ClexOde
from longreach.models import adapter, load_model
from longreach.models.tiny import TINY_WINDOW
from longreach.train.recipe import Document, recipe_from_spec
from longreach.train.recipes.clex import SCALE, clex_positions, ode_of


@pytest.mark.parametrize("t", [2, 3, 4])
def test_the_untrained_ode_gives_ntk_frequencies_at_alpha_2t_minus_1(t):
    """W_down = 0 at initialisation: z(t) = log xi_t (methods.md 14's invariant, about 1e-4)."""
    ode = ClexOde(64, 1e5, 8192)
    expected = base_inv_freq(1e5 * (2 * t - 1) ** (64 / 62), 64)
    torch.testing.assert_close(ode.inv_freq(float(t)), expected, rtol=1e-4, atol=0)
    assert torch.equal(ode.inv_freq(1.0), base_inv_freq(1e5, 64)), "t = 1: the model's own frequencies"


def test_frequencies_follow_the_length_continuously(tiny):
    method = parse_stack("clex:untrained=true").methods[0]
    own = adapter.rotary_module(tiny.model).inv_freq
    assert torch.equal(method.inv_freq(tiny, TINY_WINDOW // 2)[0], own), "inside the window: unchanged"
    lengths = [TINY_WINDOW, TINY_WINDOW + 1, TINY_WINDOW + 20, int(TINY_WINDOW * 1.5), 2 * TINY_WINDOW, 3 * TINY_WINDOW]
    freqs = torch.stack([method.inv_freq(tiny, n)[0] for n in lengths])
    assert torch.allclose(freqs[0], own), "at the window: unchanged"
    assert (freqs[1] / freqs[0] - 1).abs().max() < 1e-3, "one token more changes the frequencies by ~1/L, no jump"
    lowest = freqs[:, -1]
    assert (lowest[1:] < lowest[:-1]).all(), "the lowest frequency falls steadily with the length"
    assert torch.equal(freqs[:, 0], own[:1].expand(len(lengths))), "the highest frequency stays (NTK)"
    ceil = parse_stack("clex:untrained=true:rounding=ceil").methods[0]
    assert torch.equal(ceil.inv_freq(tiny, TINY_WINDOW + 20)[0], freqs[4]), "rounded up: t = 2 already"


def test_positions_spread_over_t_windows():
    rng = np.random.default_rng(0)
    positions = clex_positions(100, 4, rng)
    assert positions[0] == 0 and positions[-1] == 399 and len(set(positions.tolist())) == 100
    assert (np.diff(positions) > 0).all()
    assert clex_positions(100, 4, rng, window=1000)[-1] == 3999, "a short row still spans tau native windows"
    assert (clex_positions(100, 1, rng, window=1000) == np.arange(100)).all()


def test_a_training_step_updates_the_ode_and_finish_saves_what_the_method_reads(tiny, tmp_path):
    model = load_model("tiny-llama", "fp32").model
    with torch.no_grad():  # sharpen attention: the random model's near-uniform attention barely feels RoPE
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(30)
            layer.self_attn.k_proj.weight.mul_(30)
    recipe = recipe_from_spec("clex:max_factor=4")
    recipe.prepare(model, 64)
    ode = ode_of(model)
    assert torch.count_nonzero(ode.down) == 0
    rng = np.random.default_rng(0)
    docs = [Document(tuple(int(t) for t in rng.integers(5, 1000, 64))) for _ in range(8)]
    batch = next(b for b in recipe.batches(iter(docs), 64, np.random.default_rng(2)) if b.extras[SCALE] > 1)
    assert batch.position_ids.max() >= 64
    loss = recipe.loss(model, batch)
    optimizer = torch.optim.AdamW(recipe.trainable(model), lr=1e-2)
    loss.backward()
    assert ode.down.grad is not None and ode.down.grad.abs().sum() > 0, "the step reads with the ODE's frequencies"
    optimizer.step()
    assert torch.count_nonzero(ode.down) > 0, "one step moved the ODE off its initialisation"
    trained = ode.inv_freq(3.0).detach()

    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    recipe.finish(model, folder)
    assert (folder / FILE_NAME).is_file()
    loaded = load_model(str(folder), "fp32")
    method = parse_stack("clex").methods[0]
    torch.testing.assert_close(method.inv_freq(loaded, 3 * TINY_WINDOW)[0], trained)
    assert not torch.allclose(
        trained, parse_stack("clex:untrained=true").methods[0].inv_freq(loaded, 3 * TINY_WINDOW)[0]
    )
    explicit = parse_stack(f"clex:path={folder / FILE_NAME}").methods[0]
    assert torch.equal(explicit.inv_freq(tiny, 3 * TINY_WINDOW)[0], method.inv_freq(loaded, 3 * TINY_WINDOW)[0])
    ids = torch.randint(5, 1000, (1, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = loaded.model(ids).logits
        with parse_stack("clex").applied(loaded):
            inside = loaded.model(ids).logits
    assert torch.equal(inside, base), "inside the native window CLEX reads like the model"


def test_the_method_without_parameters_fails_in_one_line(tiny):
    with pytest.raises(LongreachError, match="no CLEX parameters.*untrained=true"):
        with parse_stack("clex").applied(tiny):
            pass
    with pytest.raises(LongreachError, match="not both"):
        parse_stack("clex:path=x:untrained=true")


def test_steps_through_the_training_loop_train_and_save_the_ode(tmp_path):
    """The loop optimises and checkpoints the ODE with LoRA; the folder carries it outside the weights; eval reads
    with it. (Three steps: the second samples tau = 1, where the ODE is not read. fp32: the random model's attention
    is so flat that its RoPE gradients cancel to exactly 0 in bf16.)"""
    from safetensors import safe_open

    from longreach.train.loop import TrainConfig, train

    config = TrainConfig("tiny-llama", "clex:max_factor=4", "tasks:passkey", 128, 3, tmp_path / "run",
                         batch_tokens=128, dtype="fp32", quiet=True)  # fmt: skip
    summary = train(config)
    assert summary.steps == 3 and np.isfinite(summary.final_loss)
    with safe_open(str(summary.model_dir / "model.safetensors"), framework="pt") as weights:
        assert not [k for k in weights.keys() if "clex" in k], "the ODE is not part of the transformers weights"
    trained = ClexOde.load(summary.model_dir / FILE_NAME)
    assert trained.down.dtype == torch.float32 and torch.count_nonzero(trained.down) > 0, "the loop trained the ODE"
    checkpoint = torch.load(next((tmp_path / "run" / "checkpoints").iterdir()) / "trainable.pt")
    assert any(name.endswith("clex_ode.down") for name in checkpoint), "checkpoints hold the ODE for --resume"
    loaded = load_model(str(summary.model_dir), "fp32")
    ids = torch.randint(5, 1000, (1, 3 * TINY_WINDOW), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), parse_stack("clex").applied(loaded):
        assert torch.isfinite(loaded.model(ids).logits).all()


def test_a_resumed_run_restores_the_ode_and_ends_where_an_uninterrupted_one_does(tmp_path):
    """Checkpoints at steps 2 and 4; the run is cut back to its step-2 checkpoint (as a kill -9 after it leaves it)
    and resumed: the ODE it saves equals the uninterrupted run's."""
    import dataclasses
    import shutil

    from longreach.train.loop import TrainConfig, train

    config = TrainConfig("tiny-llama", "clex:max_factor=4", "tasks:passkey", 128, 4, tmp_path / "run",
                         batch_tokens=128, dtype="fp32", save_every=2, quiet=True)  # fmt: skip
    whole = train(config)
    expected = ClexOde.load(whole.model_dir / FILE_NAME)
    assert torch.count_nonzero(expected.down) > 0
    shutil.rmtree(config.out / "checkpoints" / "step-000004")
    shutil.rmtree(whole.model_dir)
    (config.out / "train.json").unlink()
    resumed = train(dataclasses.replace(config, resume=True))
    assert resumed.steps == 4
    restored = ClexOde.load(resumed.model_dir / FILE_NAME)
    assert torch.equal(restored.down, expected.down) and torch.equal(restored.up, expected.up)
