"""Document-masked training rows: one pass under the (t, t) mask against one causal pass per document, side by side.

ProLong (Gao et al. 2024) and AnchorAttention (Wang et al. 2024) train on packed rows in which no document attends
to another. ``longreach.train.recipe.hidden_states`` runs such a row as independent causal pieces (each document,
behind the anchor for ``anchor``), the variable-length attention of the papers, instead of one forward pass under
the row's (t, t) boolean mask, which computes every score and then discards the ones across documents. This script
measures both on the same rows, interleaved (mask, pieces, mask, pieces, ...): seconds for the loss's forward and
backward of one row with LoRA r=16 on SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to ``--dtype``), the median of
the per-row ratios mask / pieces with a 95% bootstrap CI, and how far the two losses and LoRA gradients differ.

Rows come from the recipes' data in ``studies/train_recipes.yaml`` (seed 0, the training length ``--length``).
Run it alone: ``flock /tmp/longreach-bench.lock env PYTHONPATH=src python benchmarks/train_varlen.py`` (about 12
minutes at 4K in fp32 on 2 cores of an AVX2-only CPU).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import median_ci, provenance_line, write_outputs

import longreach.train.recipe as recipe_module
from longreach.models import load_model
from longreach.results.provenance import current
from longreach.train.data import open_documents
from longreach.train.recipe import TrainBatch, independent_pieces, recipe_from_spec

MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized)"}
ROOT = Path(__file__).resolve().parents[1]
TEXT = "/usr/share/doc/python3/html/_sources"
DATA = {  # as in studies/train_recipes.yaml
    "prolong": f"text:{TEXT}/howto+short:niah_multikey_1,passkey,vt",
    "anchor": f"tasks:niah_multikey_1,passkey,vt+text:{TEXT}/tutorial",
}


def trainable(model_name: str, recipe: Any, dtype: str, length: int) -> tuple[Any, Any]:
    """SmolLM2 after ``recipe.prepare``, with LoRA r=16 on every linear (as ``longreach train --lora r=16``)."""
    from peft import LoraConfig, get_peft_model

    loaded = load_model(model_name, dtype=dtype)
    recipe.prepare(loaded.model, length)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(loaded.model, config).train(), loaded.tokenizer


def step(model: Any, recipe: Any, batch: TrainBatch, pieces: bool) -> tuple[float, float, torch.Tensor]:
    """(seconds, loss, LoRA gradients flattened) of one forward and backward, by pieces or under the mask."""
    original = recipe_module.independent_pieces
    if not pieces:
        recipe_module.independent_pieces = lambda batch: None
    try:
        start = time.perf_counter()
        loss = recipe.loss(model, batch)
        loss.backward()
        seconds = time.perf_counter() - start
    finally:
        recipe_module.independent_pieces = original
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return seconds, loss.item(), grads


def head(batch: TrainBatch, t: int) -> TrainBatch:
    """The first ``t`` tokens of a one-row masked batch."""
    mask = batch.attention_mask[..., :t, :t]
    ids = batch.extras["document_ids"][:, :t]
    return TrainBatch(
        batch.input_ids[:, :t], batch.labels[:, :t], batch.position_ids[:, :t], mask, {"document_ids": ids}
    )


def measure(model_name: str, name: str, rows: int, length: int, dtype: str) -> dict:
    recipe = recipe_from_spec(name)
    model, tokenizer = trainable(model_name, recipe, dtype, length)
    documents = open_documents(DATA[name], tokenizer, length, 0, mix=recipe.mix(), prompt="raw")
    batches = recipe.batches(documents, length, np.random.default_rng(0))
    first = next(batches)
    for pieces in (True, False):  # warm up on the first row's first 256 tokens
        step(model, recipe, head(first, 256), pieces)
    result: dict[str, Any] = {"mask": [], "pieces": [], "ratio": [], "loss_diff": [], "grad_rel_diff": [], "n": []}
    for index in range(rows):
        batch = first if index == 0 else next(batches)
        result["n"].append(len(independent_pieces(batch).bounds))
        mask_s, mask_loss, mask_grads = step(model, recipe, batch, pieces=False)
        pieces_s, pieces_loss, pieces_grads = step(model, recipe, batch, pieces=True)
        result["mask"].append(mask_s)
        result["pieces"].append(pieces_s)
        result["ratio"].append(mask_s / pieces_s)
        result["loss_diff"].append(abs(mask_loss - pieces_loss))
        result["grad_rel_diff"].append(float((mask_grads - pieces_grads).norm() / mask_grads.norm()))
        print(name, f"{result['n'][-1]} pieces: mask {mask_s:.1f} s, pieces {pieces_s:.1f} s", flush=True)
    return result


def report(result: dict) -> str:
    lines = [
        "# Document-masked training rows: one pass under the mask against one causal pass per document",
        "",
        provenance_line(result),
        "",
        f"{result['model']} in {result['dtype']}, LoRA r=16, rows of {result['length']} "
        "tokens from the study's data; one forward and backward of the recipe's loss per row, mask then pieces on "
        "the same row. Seconds: medians [95% bootstrap CI]; ratio: median of the per-row ratios mask / pieces.",
        "",
        "| recipe | rows | pieces a row | mask s | pieces s | mask / pieces | max loss diff | max grad diff (rel.) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["recipes"].items():
        m, q, ratio = median_ci(r["mask"]), median_ci(r["pieces"]), median_ci(r["ratio"])
        lines.append(
            f"| {name} | {len(r['mask'])} | {', '.join(map(str, r['n']))} | {m['median']:.1f} [{m['low']:.1f}, "
            f"{m['high']:.1f}] | {q['median']:.1f} [{q['low']:.1f}, {q['high']:.1f}] | {ratio['median']:.2f} "
            f"[{ratio['low']:.2f}, {ratio['high']:.2f}] | {max(r['loss_diff']):.1e} | {max(r['grad_rel_diff']):.1e} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--recipes", default="prolong,anchor")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_varlen")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    recipes = {name: measure(args.model, name, args.rows, args.length, args.dtype) for name in args.recipes.split(",")}
    result = {
        "command": f"python benchmarks/train_varlen.py --model {args.model} --rows {args.rows} --length "
        f"{args.length} --dtype {args.dtype} --recipes {args.recipes}",
        "started": started,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "model": MODELS.get(args.model, args.model),
        "dtype": args.dtype,
        "length": args.length,
        "provenance": current(),
        "recipes": recipes,
    }
    write_outputs(args.out, result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
