"""LongPO's policy pass: a chosen and a rejected answer after one long context, split attention against one mask.

``longreach.train.shared_context.answer_logps`` scores b answers after one context in one row. On ``sdpa`` the row
runs as ``[context; answer_1]`` under the causal kernel plus each further answer's queries over the context and
itself ("split"); the alternative is the same row under one (n, n) boolean mask ("mask"). This script times the
forward and backward of the summed log-probs of both answers, interleaved on the same pairs (mask, split, one),
where "one" is a single answer after the context (one causal row: what any other recipe's row costs). SmolLM2-135M-
Instruct (Q4_1 GGUF dequantized to ``--dtype``), LoRA r=16; contexts are the first ``--length`` tokens of the
study's documents that long, answers 32 random tokens (the timing does not depend on their values). Reports medians
with 95% bootstrap CIs, the per-pair ratio mask / split, and how far the two forms' log-probs and gradients differ.

Run it alone: ``PYTHONPATH=src python benchmarks/longpo_pair.py`` (about a minute a pair at 4K in fp32 on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from common import median_ci, provenance_line, write_outputs

import longreach.train.shared_context as shared_context
from longreach.models import load_model
from longreach.results.provenance import current
from longreach.train.data import open_documents

ROOT = Path(__file__).resolve().parents[1]
DATA = "tasks:niah_multikey_1,passkey,vt+text:/usr/share/doc/python3/html/_sources/tutorial"  # the study's


def trainable(dtype: str) -> tuple[Any, Any]:
    from peft import LoraConfig, get_peft_model

    loaded = load_model("smollm2-135m", dtype=dtype)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(loaded.model, config).train(), loaded.tokenizer


def step(model: Any, context: torch.Tensor, answers: torch.Tensor, split: bool) -> tuple[float, torch.Tensor, Any]:
    """(seconds, log-probs, LoRA gradients) of one forward and backward of the answers' summed log-probs."""
    original = shared_context.split_attention
    if not split:
        shared_context.split_attention = _never_split
    try:
        start = time.perf_counter()
        logps = shared_context.answer_logps(model, context, answers)
        logps.sum().backward()
        seconds = time.perf_counter() - start
    finally:
        shared_context.split_attention = original
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return seconds, logps.detach(), grads


class _never_split:  # noqa: N801 - stands in for the context manager
    def __init__(self, lm: Any) -> None:
        pass

    def __enter__(self) -> bool:
        return False

    def __exit__(self, *exc: object) -> None:
        return None


def measure(pairs: int, length: int, dtype: str, answer: int) -> dict:
    model, tokenizer = trainable(dtype)
    documents = open_documents(DATA, tokenizer, length, 0, prompt="raw")
    generator = torch.Generator().manual_seed(0)
    result: dict[str, list] = {"mask": [], "split": [], "one": [], "ratio": [], "logp_diff": [], "grad_rel_diff": []}
    for index in range(pairs + 1):  # the first pair, cut to 256 tokens, warms up
        tokens = next(documents).tokens
        while len(tokens) < length:  # every timed context is length - answer tokens long
            tokens = next(documents).tokens
        context = torch.tensor([tokens[: 256 if index == 0 else length - answer]])
        answers = torch.randint(100, 40000, (2, answer), generator=generator)
        mask_s, mask_logps, mask_grads = step(model, context, answers, split=False)
        split_s, split_logps, split_grads = step(model, context, answers, split=True)
        one_s, _, _ = step(model, context, answers[:1], split=True)
        if index == 0:
            continue
        result["mask"].append(mask_s)
        result["split"].append(split_s)
        result["one"].append(one_s)
        result["ratio"].append(mask_s / split_s)
        result["logp_diff"].append(float((mask_logps - split_logps).abs().max()))
        result["grad_rel_diff"].append(float((mask_grads - split_grads).norm() / mask_grads.norm()))
        print(f"pair {index}: mask {mask_s:.1f} s, split {split_s:.1f} s, one answer {one_s:.1f} s", flush=True)
    return result


def report(result: dict) -> str:
    r = result["pairs"]
    cells = {name: median_ci(r[name]) for name in ("mask", "split", "one", "ratio")}
    fmt = {name: f"{c['median']:.1f} [{c['low']:.1f}, {c['high']:.1f}]" for name, c in cells.items()}
    ratio, context = cells["ratio"], result["length"] - result["answer"]
    return (
        "\n".join(
            [
                "# LongPO's policy pass: split attention against one mask",
                "",
                provenance_line(result),
                "",
                f"{result['model']} in {result['dtype']}, LoRA r=16; a context of {context} "
                f"tokens and 2 answers of {result['answer']}; seconds of one forward and backward, medians [95% "
                "bootstrap CI]; mask / split: median of the per-pair ratios.",
                "",
                "| pairs | mask s | split s | one answer s | mask / split | max log-prob diff | max grad diff (rel.) |",
                "|---|---|---|---|---|---|---|",
                f"| {len(r['mask'])} | {fmt['mask']} | {fmt['split']} | {fmt['one']} | {ratio['median']:.2f} "
                f"[{ratio['low']:.2f}, {ratio['high']:.2f}] | {max(r['logp_diff']):.1e} | "
                f"{max(r['grad_rel_diff']):.1e} |",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--answer", type=int, default=32)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/longpo_pair")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    pairs = measure(args.pairs, args.length, args.dtype, args.answer)
    result = {
        "command": f"python benchmarks/longpo_pair.py --pairs {args.pairs} --length {args.length} --answer "
        f"{args.answer} --dtype {args.dtype}",
        "started": started,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized)",
        "dtype": args.dtype,
        "length": args.length,
        "answer": args.answer,
        "provenance": current(),
        "pairs": pairs,
    }
    write_outputs(args.out, result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
