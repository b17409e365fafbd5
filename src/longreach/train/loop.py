"""The training loop: a recipe, local data and LoRA (peft) on a transformers model -> a model folder ``eval`` loads.

A plain torch loop (AdamW, transformers' cosine schedule with warmup, peft's LoRA), not HF ``Trainer`` nor an
``accelerate`` loop: one process on one device needs neither's launcher, and a recipe's optimizer step is a list of
batches of varying shape (Dataset Decomposition: one bucket per step, the batch size varying with the bucket's
length), which Trainer's fixed accumulation count cannot express. Optimizer settings follow ProLong (Gao et al.
2024): AdamW (0.9, 0.95), weight decay 0.1 on full fine-tuning (0 on LoRA), gradient clipping at 1.0, 10% warmup,
cosine decay to 10% of the peak learning rate; the loss of a step is the token-weighted mean of its batches' losses.

Weights: with LoRA (default ``r=16`` on every linear layer but the head), the model keeps ``--dtype`` (bf16)
weights and peft keeps the adapters in float32; ``--lora none`` trains every weight in float32 and saves them in
``--dtype``. At the end LoRA is merged and ``OUT/model/`` holds a plain transformers folder (config with the
recipe's RoPE changes, weights, tokenizer with its chat template): ``longreach eval --model OUT/model``.

Checkpoints: every ``save_every`` steps and at the last, ``OUT/checkpoints/step-NNNNNN/`` gets the trainable weights,
the optimizer, scheduler and torch RNG states and ``state.json`` (steps done, tokens, loss curve, wall time); it is
written to a temporary folder and renamed, so a kill -9 leaves either the whole checkpoint or none. ``resume``
restores the newest one and skips the steps it covers: the data stream is deterministic in (data spec, tokenizer,
length, seed), so the resumed run reads exactly the batches the uninterrupted one would have.
``OUT/train.json`` records the settings, provenance, tokens/s, wall time, peak RSS and the loss curve.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from longreach import params
from longreach.errors import LongreachError
from longreach.measure import Stopwatch, peak_gpu, peak_rss, peak_rss_so_far
from longreach.models import LoadedModel, adapter, load_model, load_tokenizer, resolve
from longreach.models.loading import DTYPES, check_device_name
from longreach.models.sources import WEIGHTS_NOTE, quiet_transformers
from longreach.prompts import PROMPT_CHOICES
from longreach.results import provenance
from longreach.train.data import open_documents, parse_data
from longreach.train.recipe import Recipe, TrainBatch, causal_lm, recipe_from_spec

MODEL_DIR = "model"
CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
# settings a resumed run may change (they do not change what is trained)
RESUMABLE_CHANGES = ("resume", "quiet", "save_every", "device")


@dataclass(frozen=True)
class LoraSpec:
    """``--lora r=16:alpha=32:dropout=0.05`` (``none``: full fine-tuning)."""

    r: int = field(default=16, metadata={"help": "rank of the adapters"})
    alpha: int = field(default=0, metadata={"help": "scaling numerator (0: 2r)"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapters' input"})

    def __post_init__(self) -> None:
        params.require(self.r >= 1, f"--lora: r must be >= 1; got {self.r}")
        params.require(self.alpha >= 0, f"--lora: alpha must be >= 0; got {self.alpha}")
        params.require(0 <= self.dropout < 1, f"--lora: dropout must be in [0, 1); got {self.dropout:g}")


def parse_lora(spec: str) -> LoraSpec | None:
    """``"r=16"`` / ``"16"`` / ``"r=8:alpha=16"`` -> LoraSpec; ``"none"`` -> None (full fine-tuning)."""
    if spec.strip().lower() == "none":
        return None
    return params.build(LoraSpec, "--lora", [part for part in spec.split(":") if part])


@dataclass(frozen=True)
class TrainConfig:
    """One training run (the ``longreach train`` options)."""

    model: str
    recipe: str
    data: str
    length: int
    steps: int
    out: Path
    lora: str = "r=16"
    lr: float = 0.0  # 0: 2e-4 with LoRA, 2e-5 for full fine-tuning
    batch_tokens: int = 8192
    dtype: str = "bf16"
    device: str = "cpu"
    seed: int = 0
    save_every: int = 10
    resume: bool = False
    prompt: str = "auto"
    grad_checkpointing: bool = False
    quiet: bool = False

    def validate(self) -> tuple[Recipe, LoraSpec | None]:
        """Every cheap check (no model load): the recipe, LoRA and data specs and the numbers."""
        recipe, lora = recipe_from_spec(self.recipe), parse_lora(self.lora)
        parse_data(self.data)
        for name, value, low in (
            ("length", self.length, 2),
            ("steps", self.steps, 1),
            ("save-every", self.save_every, 1),
        ):
            params.require(value >= low, f"--{name} must be >= {low}; got {value}")
        params.require(self.batch_tokens >= 1, f"--batch-tokens must be >= 1; got {self.batch_tokens}")
        params.require(self.lr >= 0, f"--lr must be >= 0; got {self.lr:g}")
        params.require(self.dtype in DTYPES, f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        params.require(self.prompt in PROMPT_CHOICES, f"unknown --prompt {self.prompt!r}; valid: auto, raw, chat")
        check_device_name(self.device)
        return recipe, lora

    @property
    def learning_rate(self) -> float:
        return self.lr or (2e-5 if self.lora.strip().lower() == "none" else 2e-4)

    def settings(self) -> dict[str, Any]:
        """The settings as JSON values (what ``state.json`` and ``train.json`` record)."""
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


@dataclass
class TrainState:
    """Progress through a run, saved in every checkpoint."""

    step: int = 0
    tokens: int = 0
    scored_tokens: int = 0
    seconds: float = 0.0  # wall time of the training loop: data, steps and checkpoints
    compute_seconds: float = 0.0  # forward, backward and optimizer steps only
    losses: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    resumed_at: list[int] = field(default_factory=list)
    peak_rss_bytes: int = 0
    peak_gpu_bytes: int = 0


@dataclass(frozen=True)
class TrainSummary:
    """What a run produced: the model folder and the numbers of ``train.json``."""

    out: Path
    model_dir: Path
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    final_loss: float


def train(config: TrainConfig) -> TrainSummary:
    """Train ``config.model`` with the recipe on the data, checkpointing as it goes; save ``OUT/model`` and
    ``OUT/train.json``. Bad settings fail before the model loads."""
    recipe, lora = config.validate()
    checkpoint = _checkpoint_to_resume(config)
    _check_data(recipe, load_tokenizer(resolve(config.model)), config)  # in seconds, before the weights load
    loaded = load_model(config.model, config.dtype, config.device)
    model = _trainable_model(loaded, recipe, lora, config)  # recipe.prepare runs before any batch is built
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=config.learning_rate, betas=(0.9, 0.95), weight_decay=0.0 if lora else 0.1
    )
    scheduler = _schedule(optimizer, config.steps)
    state = _restore(checkpoint, model, optimizer, scheduler, config) if checkpoint else TrainState()
    steps = _steps(recipe, loaded.tokenizer, config, state.step)
    _run(model, recipe, steps, optimizer, scheduler, state, config)
    model_dir = save_model(
        model, loaded.tokenizer, recipe, config.out / MODEL_DIR, config.dtype, _weights_note(config, loaded)
    )
    _write_record(config, recipe, loaded, state, model_dir)
    return TrainSummary(
        config.out,
        model_dir,
        state.step,
        state.tokens,
        state.seconds,
        state.tokens / state.seconds if state.seconds else 0.0,
        state.losses[-1] if state.losses else math.nan,
    )


def _trainable_model(loaded: LoadedModel, recipe: Recipe, lora: LoraSpec | None, config: TrainConfig) -> Any:
    """The model after the recipe's change, with LoRA adapters (or every weight in float32) set to train."""
    torch.manual_seed(config.seed)
    model = loaded.model
    recipe.prepare(model, config.length)
    if config.grad_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora is None:
        model = model.float()
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    else:
        from peft import LoraConfig, get_peft_model

        adapters = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha or 2 * lora.r,
            lora_dropout=lora.dropout,
            target_modules="all-linear",  # attention and MLP projections; never the output head
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, adapters)  # adapters in float32 over bf16 weights (autocast_adapter_dtype)
    for parameter in recipe.trainable(model):
        parameter.requires_grad_(True)
    return model.train()


def _schedule(optimizer: torch.optim.Optimizer, steps: int) -> Any:
    """ProLong's schedule: linear warmup over 10% of the steps, cosine decay to 10% of the peak rate."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=steps // 10, num_training_steps=steps, min_lr_rate=0.1
    )


def _check_data(recipe: Recipe, tokenizer: Any, config: TrainConfig) -> None:
    """Build the first document of every source (a task that does not fit the length fails here, one line)."""
    documents = open_documents(
        config.data, tokenizer, config.length, config.seed, mix=recipe.mix(), prompt=config.prompt
    )
    for _ in parse_data(config.data):
        next(documents)


def _steps(recipe: Recipe, tokenizer: Any, config: TrainConfig, done: int) -> Iterator[list[TrainBatch]]:
    """The run's optimizer steps after the first ``done`` (read, not trained: a resumed run continues its data
    order, which is deterministic in data, tokenizer, length, seed and recipe); call after ``recipe.prepare``."""
    documents = open_documents(
        config.data, tokenizer, config.length, config.seed, mix=recipe.mix(), prompt=config.prompt
    )
    steps = iter(recipe.steps(documents, config.length, config.batch_tokens, np.random.default_rng(config.seed)))
    for _ in range(done):
        next(steps)
    if done >= config.steps:
        return steps
    first = next(steps, None)
    if first is None:
        raise LongreachError(f"--data {config.data} gives no training step at --length {config.length}")
    return itertools.chain([first], steps)


def _run(
    model: Any,
    recipe: Recipe,
    steps: Iterator[list[TrainBatch]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    config: TrainConfig,
) -> None:
    """Train from ``state.step`` to ``config.steps``, checkpointing every ``save_every`` steps and at the end."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    with _progress(config, state) as (progress, bar), peak_rss() as rss, peak_gpu(config.device) as gpu:
        last = time.perf_counter()
        while state.step < config.steps:
            batches = next(steps, None)
            if batches is None:
                raise LongreachError(f"--data ran out after {state.step} steps")  # sources are endless: a bug
            with Stopwatch() as watch:
                loss = _step(model, recipe, batches, trainable, optimizer, scheduler, config.device, state.step)
            state.step += 1
            now = time.perf_counter()
            state.seconds += now - last
            state.compute_seconds += watch.seconds
            last = now
            state.tokens += sum(b.tokens for b in batches)
            state.scored_tokens += sum(b.scored for b in batches)
            state.losses.append(loss)
            state.step_tokens.append(sum(b.tokens for b in batches))
            state.peak_rss_bytes = max(state.peak_rss_bytes, peak_rss_so_far())
            progress.update(bar, completed=state.step, loss=loss, rate=state.tokens / max(state.seconds, 1e-9))
            if state.step % config.save_every == 0 or state.step == config.steps:
                save_checkpoint(config, model, optimizer, scheduler, state)
    state.peak_rss_bytes = max(state.peak_rss_bytes, rss.bytes)
    state.peak_gpu_bytes = max(state.peak_gpu_bytes, gpu.bytes)


def _step(
    model: Any,
    recipe: Recipe,
    batches: list[TrainBatch],
    trainable: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    device: str,
    index: int,
) -> float:
    """One optimizer step over ``batches`` (gradient accumulation, each batch weighted by its share of tokens)."""
    total = sum(b.tokens for b in batches)
    step_loss = 0.0
    for batch in batches:
        weight = batch.tokens / total
        loss = recipe.loss(model, batch.to(device))
        (loss * weight).backward()
        step_loss += float(loss.detach()) * weight
    if not math.isfinite(step_loss):
        raise LongreachError(f"the loss is {step_loss} at step {index + 1}; lower --lr or use --dtype fp32")
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss


@contextlib.contextmanager
def _progress(config: TrainConfig, state: TrainState) -> Iterator[tuple[Progress, Any]]:
    """A rich progress bar on stderr (step, loss, tokens/s, elapsed, ETA); silent when ``quiet``."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:,.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    loss = state.losses[-1] if state.losses else math.nan
    with Progress(*columns, console=Console(stderr=True, quiet=config.quiet), transient=False) as progress:
        bar = progress.add_task(f"train {config.recipe}", total=config.steps, completed=state.step, loss=loss, rate=0.0)
        yield progress, bar


# ---- checkpoints -------------------------------------------------------------------------------------------------


def _checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints in ``out``, oldest first (a folder is complete once renamed into place)."""
    folder = out / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("step-") and (p / "state.json").is_file())


def _checkpoint_to_resume(config: TrainConfig) -> Path | None:
    """The newest checkpoint when resuming (settings must match); refuses to train over another run's folder."""
    found = _checkpoint_dirs(config.out)
    if not config.resume:
        if found or (config.out / "train.json").exists():
            raise LongreachError(f"{config.out} already holds a training run; add --resume or choose a new --out")
        return None
    if not found:
        return None  # nothing saved yet: start from the beginning
    changed = changed_setting(json.loads((found[-1] / "state.json").read_text())["settings"], config)
    if changed:
        key, was, now = changed
        raise LongreachError(
            f"--resume: {key} was {was!r} in {config.out}, now {now!r}; resume with the same settings or choose a "
            "new --out"
        )
    return found[-1]


def changed_setting(saved: dict[str, Any], config: TrainConfig) -> tuple[str, Any, Any] | None:
    """The first setting (key, saved value, new value) that differs between a recorded run and ``config``, ignoring
    those a resumed run may change (:data:`RESUMABLE_CHANGES`); None when they train the same thing."""
    for key, value in config.settings().items():
        if key not in RESUMABLE_CHANGES and saved.get(key) != value:
            return key, saved.get(key), value
    return None


def _trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    config: TrainConfig, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState
) -> Path:
    """Write ``OUT/checkpoints/step-NNNNNN`` atomically (temporary folder, then rename); keep the newest two."""
    folder = config.out / CHECKPOINTS
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{state.step:06d}"
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".partial-"))
    torch.save(_trainable_state(model), staging / "trainable.pt")
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    torch.save(_rng_state(config.device), staging / "rng.pt")
    record = {"settings": config.settings(), "state": asdict(state)}
    (staging / "state.json").write_text(json.dumps(record, indent=1))
    _fsync_folder(staging)
    if final.exists():
        shutil.rmtree(final)
    os.rename(staging, final)
    for old in _checkpoint_dirs(config.out)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    for partial in folder.glob(".partial-*"):  # left by a run killed while writing
        if partial != staging:
            shutil.rmtree(partial, ignore_errors=True)
    return final


def _fsync_folder(folder: Path) -> None:
    for file in folder.iterdir():
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def _rng_state(device: str) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore(
    checkpoint: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, config: TrainConfig
) -> TrainState:
    """Load a checkpoint into the model, optimizer and scheduler; return its state (with this resume noted)."""
    weights = torch.load(checkpoint / "trainable.pt", map_location="cpu")
    named = dict(model.named_parameters())
    missing = sorted(set(weights) - set(named))
    if missing:
        raise LongreachError(f"--resume: checkpoint {checkpoint} holds weights this model lacks ({missing[0]}, ...)")
    with torch.no_grad():
        for name, tensor in weights.items():
            named[name].copy_(tensor)
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=config.device))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt"))
    rng = torch.load(checkpoint / "rng.pt")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and config.device.startswith("cuda"):
        torch.cuda.set_rng_state(rng["cuda"], config.device)
    state = TrainState(**json.loads((checkpoint / "state.json").read_text())["state"])
    state.resumed_at.append(state.step)
    return state


# ---- the saved model ---------------------------------------------------------------------------------------------


def _weights_note(config: TrainConfig, loaded: LoadedModel) -> str:
    """What the saved weights are: the base model's note, the recipe and how it trained, the saved dtype."""
    how = "every weight fine-tuned" if config.lora == "none" else f"LoRA {config.lora} merged"
    return f"{loaded.weights}, trained by longreach train ({config.recipe}, {how}), saved in {config.dtype}"


def save_model(model: Any, tokenizer: Any, recipe: Recipe, out: Path, dtype: str, weights: str) -> Path:
    """Merge LoRA into the weights and write a plain transformers folder (weights in ``dtype``, the config with the
    recipe's changes, the tokenizer and its chat template), then the recipe's own files and ``weights``, the note of
    what the weights are (:data:`longreach.models.sources.WEIGHTS_NOTE`). Written to a temporary folder and renamed
    into place."""
    lm = model.merge_and_unload() if hasattr(model, "merge_and_unload") else causal_lm(model)
    lm = lm.to(DTYPES[dtype]).eval()
    try:
        adapter.forget_dequantized_quantizer(lm)  # a GGUF model's weights are plain tensors after loading
    except ValueError as exc:
        raise LongreachError(f"cannot save the trained model: {exc}") from None
    if lm.is_activation_checkpointing:
        lm.activation_checkpointing_disable()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    with quiet_transformers():  # no shard-writing progress bar
        lm.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    recipe.finish(lm, staging)
    (staging / WEIGHTS_NOTE).write_text(weights + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.rename(staging, out)
    return out


def _write_record(config: TrainConfig, recipe: Recipe, loaded: LoadedModel, state: TrainState, model_dir: Path) -> None:
    """``OUT/train.json``: settings, provenance, throughput, memory and the loss curve."""
    record = {
        "settings": config.settings(),
        "recipe": recipe.spec,
        "learning_rate": config.learning_rate,
        "model_dir": str(model_dir),
        "base_model": {"name": loaded.name, "weights": loaded.weights, "source": loaded.source},
        "steps": state.step,
        "tokens": state.tokens,
        "scored_tokens": state.scored_tokens,
        "train_seconds": state.seconds,
        "compute_seconds": state.compute_seconds,
        "tokens_per_s": state.tokens / state.seconds if state.seconds else 0.0,
        "peak_rss_mb": state.peak_rss_bytes / 2**20,
        "peak_gpu_mb": state.peak_gpu_bytes / 2**20,
        "losses": state.losses,
        "step_tokens": state.step_tokens,
        "resumed_at": state.resumed_at,
        "provenance": provenance.current(),
    }
    (config.out / "train.json").write_text(json.dumps(record, indent=1))
