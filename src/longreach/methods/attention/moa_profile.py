"""Make a MoA plan for a model: gradient profiling of attention influence, then a search over elastic windows.

Ein legend: h query heads, k KV heads, g = h / k, n tokens, delta = i - j (query minus key position).

Profiling (MoA section 4, "attention influence"): the calibration prompts are generated task instances (by
default RULER's multi-value needles and bio_multi, families the KV benchmark does not evaluate, so a plan is not
fitted to its test data; MoA calibrates on long-range summaries) answered by the model itself (greedy: MoA's
"model alignment"); the loss is the
answer's negative log-likelihood. With explicit attention probabilities A (float32) and G = dL/dA, masking entry
(i, j) and renormalising row i changes the loss by, to first order,

    effect_ij = -A_ij (G_ij - sum_m A_im G_im) / (1 - A_ij)

We sum |effect| per KV head over its query heads and over the prompts, by distance delta = i - j for keys past the
sinks: D[length][layer, head, delta]. A window W masks every pair with delta >= W, so its loss is the tail sum of D.

Search: candidate rules ``W(N) = alpha + beta N`` (MoA's elastic spans). Each (layer, KV head) independently
minimises ``loss(rule) + lam * size(rule)`` (summed over the profiled lengths; size = the cache fraction the rule
keeps at the target lengths); ``lam`` is bisected until the mean kept fraction meets the budget at every target
length (a Lagrangian greedy search: no MILP solver needed).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from longreach import tokens
from longreach.generation import cut_at_stop
from longreach.methods.attention.moa import MoAPlan
from longreach.models import LoadedModel, adapter
from longreach.params import require
from longreach.tasks import parse_task

ALPHAS = (-1024, -512, -256, 0, 128, 256, 512, 1024)
BETAS = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
CALIBRATION = ("niah_multivalue", "bio_multi")


@dataclass(frozen=True)
class Profile:
    """distance[length] (layers, kv heads, length): summed |effect| of the pairs at each distance (past the sinks)."""

    distance: dict[int, torch.Tensor]
    sink: int
    prompts: int


ProbabilityHook = Callable[[int, torch.Tensor, torch.Tensor], None]


class _ObservedAttention(torch.autograd.Function):
    """Causal softmax attention whose backward recomputes the probabilities P (as flash attention does, so no
    (n, n) tensor is kept between the passes), hands (P, dL/dP) to a hook, then returns the input gradients:
    dS = P * (dP - rowsum(dP * P)), dq = s dS k, dk = s dS^T q, dv = P^T dO. Shapes (b, h, n, d), float32."""

    @staticmethod
    def forward(ctx: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, hook: Any) -> Any:
        ctx.save_for_backward(query, key, value)
        ctx.scale, ctx.hook = scale, hook
        return _causal_probabilities(query, key, scale) @ value

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Any:
        query, key, value = ctx.saved_tensors
        probabilities = _causal_probabilities(query, key, ctx.scale)
        grad_probabilities = grad_output @ value.transpose(-1, -2)
        ctx.hook(probabilities, grad_probabilities)
        grad_value = probabilities.transpose(-1, -2) @ grad_output
        grad_scores = probabilities * (grad_probabilities - (grad_probabilities * probabilities).sum(-1, keepdim=True))
        del probabilities, grad_probabilities
        grad_query = (grad_scores @ key) * ctx.scale
        grad_key = (grad_scores.transpose(-1, -2) @ query) * ctx.scale
        return grad_query, grad_key, grad_value, None, None


def _causal_probabilities(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    n = key.shape[2]
    logits = (query @ key.transpose(-1, -2)) * scale
    future = torch.ones(query.shape[2], n, dtype=torch.bool, device=query.device).triu(n - query.shape[2] + 1)
    return logits.masked_fill(future, float("-inf")).softmax(dim=-1)


@contextmanager
def attention_probabilities(model: Any, on_gradient: ProbabilityHook) -> Iterator[None]:
    """Compute every layer's attention explicitly (float32, causal) and, during the backward pass, call
    ``on_gradient(layer, probabilities (b, h, n, n), d loss / d probabilities)``. For forwards without a cache
    (:func:`longreach.models.adapter.forward_with_grad`). The probabilities are recomputed in the backward pass,
    one layer at a time."""

    def kernel(call: adapter.AttentionCall, inner: object) -> torch.Tensor:
        positions = call.positions
        query = call.rotate(call.query, positions).float()
        key = call.rotate(call.key, positions).float().repeat_interleave(call.groups, dim=1)
        value = call.value.float().repeat_interleave(call.groups, dim=1)
        layer = call.layer
        output = _ObservedAttention.apply(query, key, value, call.scaling, lambda p, g: on_gradient(layer, p, g))
        return output.to(call.value.dtype).transpose(1, 2)

    with adapter.attention_kernel(model, kernel):
        yield


def calibration_prompts(
    loaded: LoadedModel, length: int, count: int, seed: int, families: tuple[str, ...] = CALIBRATION
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) pairs: prompts of ``length`` tokens from ``families`` in turn and the model's own
    greedy answer (up to its first stop string or 12 tokens)."""
    pairs = []
    for index in range(count):
        task = parse_task(families[index % len(families)]).task
        sample = task.generate(loaded.tokenizer, length, (index + 0.5) / count, seed, index)
        prompt_ids = tokens.encode(loaded.tokenizer, sample.prompt)
        answer = _greedy_answer(loaded, prompt_ids, sample.stop, 12)
        answer_ids = tokens.encode(loaded.tokenizer, sample.prompt + answer)[len(prompt_ids) :]
        if answer_ids:
            pairs.append((prompt_ids, answer_ids))
    return pairs


def _greedy_answer(loaded: LoadedModel, prompt_ids: list[int], stop: tuple[str, ...], budget: int) -> str:
    """The unmodified model's greedy continuation of ``prompt_ids``, cut at the first stop string."""
    with torch.inference_mode():
        logits, cache = adapter.forward(loaded.model, torch.tensor([prompt_ids], device=loaded.device))
        new: list[int] = []
        text = ""
        for step in range(budget):
            token_id = int(logits[0, -1].argmax())
            if token_id == loaded.tokenizer.eos_token_id:
                break
            new.append(token_id)
            text = loaded.tokenizer.decode(new, skip_special_tokens=True)
            if cut_at_stop(text, stop) is not None:
                return cut_at_stop(text, stop) or text
            token = torch.tensor([[new[-1]]], device=loaded.device)
            logits, cache = adapter.forward(loaded.model, token, cache, start=len(prompt_ids) + step)
    return text


def influence_by_distance(probabilities: torch.Tensor, grad: torch.Tensor, kv_heads: int, sink: int) -> torch.Tensor:
    """|effect| of masking each causal pair, summed per KV head by distance i - j over keys j >= sink: (k, n).
    probabilities, grad: (1, h, n, n)."""
    n = probabilities.shape[-1]
    row_term = (probabilities * grad).sum(dim=-1, keepdim=True)
    effect = (probabilities * (grad - row_term) / (1 - probabilities).clamp_min(1e-6)).abs()[0]
    effect = effect.reshape(kv_heads, -1, n, n).sum(dim=1)  # (k, n, n)
    delta = torch.arange(n)[:, None] - torch.arange(n)[None, :]
    counted = (delta >= 0) & (torch.arange(n)[None, :] >= sink)
    out = torch.zeros(kv_heads, n)
    for head in range(kv_heads):
        out[head].index_add_(0, delta[counted], effect[head][counted].float())
    return out


def profile(
    loaded: LoadedModel,
    lengths: tuple[int, ...],
    count: int,
    sink: int,
    seed: int = 0,
    families: tuple[str, ...] = CALIBRATION,
) -> Profile:
    """Attention influence by distance, per layer and KV head, at each calibration length."""
    modules = adapter.attention_modules(loaded.model)
    kv_heads = modules[0].config.num_key_value_heads
    result = {}
    for length in lengths:
        total = torch.zeros(len(modules), kv_heads, length + 16)

        def accumulate(layer: int, probs: torch.Tensor, grad: torch.Tensor, total: torch.Tensor = total) -> None:
            by_distance = influence_by_distance(probs, grad, kv_heads, sink)
            total[layer, :, : by_distance.shape[1]] += by_distance

        for prompt_ids, answer_ids in calibration_prompts(loaded, length, count, seed, families):
            ids = torch.tensor([prompt_ids + answer_ids])
            with attention_probabilities(loaded.model, accumulate):
                logits = adapter.forward_with_grad(loaded.model, ids, logits_to_keep=len(answer_ids) + 1)
                loss = torch.nn.functional.cross_entropy(logits[0, :-1].float(), ids[0, -len(answer_ids) :])
                loss.backward()
        result[length] = total
    return Profile(result, sink, count)


def cached_profile(
    loaded: LoadedModel,
    lengths: tuple[int, ...],
    count: int,
    sink: int,
    seed: int = 0,
    families: tuple[str, ...] = CALIBRATION,
) -> Profile:
    """:func:`profile`, remembered on disk per (model source, dtype, lengths, prompts, sink, seed, families)."""
    from longreach.models import cache_dir

    text = f"{loaded.source}|{loaded.dtype}|{lengths}|{count}|{sink}|{seed}|{families}|v2"
    path = cache_dir() / "moa" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        stored = torch.load(path)
        return Profile(stored["distance"], stored["sink"], stored["prompts"])
    result = profile(loaded, lengths, count, sink, seed, families)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"distance": result.distance, "sink": result.sink, "prompts": result.prompts}, path)
    return result


def candidate_windows(length: int) -> torch.Tensor:
    """(rules, ) windows of every (alpha, beta) candidate at input length ``length``, clamped to [1, length]."""
    return torch.tensor([max(1, min(length, round(a + b * length))) for a in ALPHAS for b in BETAS])


def make_plan(
    loaded: LoadedModel,
    keep: float,
    targets: tuple[int, ...],
    lengths: tuple[int, ...] = (1024, 2048),
    count: int = 4,
    sink: int = 64,
    seed: int = 0,
    profiled: Profile | None = None,
    families: tuple[str, ...] = CALIBRATION,
) -> MoAPlan:
    """Profile ``loaded`` at ``lengths`` (``count`` prompts each) and choose one rule per (layer, KV head) so the
    cache keeps at most ``keep`` of its tokens on average at every length in ``targets``."""
    require(0.0 < keep <= 1.0, f"moa plan: keep must be in (0, 1]; got {keep}")
    require(bool(targets), "moa plan: give at least one target length")
    profiled = profiled or cached_profile(loaded, lengths, count, sink, seed, families)
    first = next(iter(profiled.distance.values()))
    layers, kv_heads = first.shape[:2]
    rules = [(a, b) for a in ALPHAS for b in BETAS]
    loss = torch.zeros(layers, kv_heads, len(rules))
    for length, distance in profiled.distance.items():
        tail = distance.flip(-1).cumsum(-1).flip(-1)  # tail[..., w] = sum of distances >= w
        windows = candidate_windows(length).clamp(max=tail.shape[-1] - 1)
        scale = distance.sum().clamp_min(1e-12)
        loss += tail[..., windows] / scale
    size = torch.zeros(len(rules))
    for length in targets:
        size += torch.tensor([min(length, sink + w - 1) / length for w in candidate_windows(length).tolist()])
    size /= len(targets)

    def choose(lam: float) -> torch.Tensor:
        return (loss + lam * size).argmin(dim=-1)  # (layers, kv heads) rule index

    def kept(choice: torch.Tensor) -> float:
        plan = _plan(choice, rules, sink)
        return max(plan.kept_fraction(length) for length in targets)

    low, high = 0.0, 1.0
    while kept(choose(high)) > keep and high < 1e6:
        high *= 2
    if kept(choose(high)) > keep:
        raise ValueError(f"moa plan: no candidate rules keep <= {keep} of the cache at {targets}")
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (low, mid) if kept(choose(mid)) <= keep else (mid, high)
    choice = choose(high)
    plan = _plan(choice, rules, sink)
    chosen_loss = loss.gather(-1, choice.unsqueeze(-1)).sum().item()
    meta = {
        "model": loaded.name,
        "keep": keep,
        "targets": list(targets),
        "profile_lengths": list(profiled.distance),
        "prompts_per_length": profiled.prompts,
        "calibration": list(families),
        "kept_fraction": {str(t): round(plan.kept_fraction(t), 4) for t in targets},
        "predicted_loss": chosen_loss,
        "search": "lagrangian greedy per KV head over alpha x beta rules",
        "created_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    return MoAPlan(plan.alphas, plan.betas, sink, meta)


def _plan(choice: torch.Tensor, rules: list[tuple[int, float]], sink: int) -> MoAPlan:
    alphas = [[float(rules[int(c)][0]) for c in row] for row in choice]
    betas = [[float(rules[int(c)][1]) for c in row] for row in choice]
    return MoAPlan(alphas, betas, sink)
