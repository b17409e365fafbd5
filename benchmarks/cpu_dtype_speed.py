"""bf16 against fp32 on this CPU, side by side: is bf16 the fast dtype here, or a slow fallback?

torch runs bf16 matmuls through oneDNN only where the CPU has AVX-512 (``avx512_core``) or AMX; elsewhere (an
AVX2-only CPU, e.g. the AMD EPYC some of our machines have) a bf16 ``bmm`` falls back to a single-threaded reference
GEMM and a bf16 ``linear`` to a converting path. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says which one
this machine takes; ``longreach.models.cpu.fast_bf16`` asks the same question and warns when bf16 is slow.

One run measures, with ``--reps`` repetitions interleaved (fp32, bf16, fp32, bf16, ...), medians with 95% bootstrap
CIs and the median of the per-repetition ratios bf16 / fp32:
1. kernels: ``linear`` (n x 576 by 1536 x 576, SmolLM2's MLP shape) and ``bmm`` (9 heads, n x 64 by 64 x n: the
   attention scores' shape);
2. prefill: SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to bf16 or to fp32) reading ``--prefill-tokens``
   random token ids (one forward, no grad, sdpa);
3. a training step: the same model with LoRA r=16 on every linear (peft, as ``longreach train --lora r=16``), one
   forward and backward of the causal LM loss on ``--train-tokens`` tokens.

Run it alone: ``flock /tmp/longreach-bench.lock env OMP_NUM_THREADS=2 PYTHONPATH=src python
benchmarks/cpu_dtype_speed.py`` (about 10 minutes on an AVX2-only CPU, where bf16 is slow).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import median_ci, write_outputs

from longreach.models import load_model
from longreach.models.cpu import fast_bf16
from longreach.results.provenance import current

ROOT = Path(__file__).resolve().parents[1]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def kernels(n: int) -> dict[str, Callable[[], object]]:
    """Calls named ``"{kernel} {dtype}"``: the MLP's linear and the attention scores' bmm at ``n`` tokens."""
    calls = {}
    for name, dtype in DTYPES.items():
        x, w = torch.randn(n, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        q, k = torch.randn(9, n, 64, dtype=dtype), torch.randn(9, 64, n, dtype=dtype)
        calls[f"linear {name}"] = lambda x=x, w=w: torch.nn.functional.linear(x, w)
        calls[f"bmm {name}"] = lambda q=q, k=k: torch.bmm(q, k)
    return calls


def prefill(dtype: str, tokens: int) -> Callable[[], object]:
    model = load_model("smollm2-135m", dtype=dtype).model.eval()
    ids = torch.randint(100, 40000, (1, tokens), generator=torch.Generator().manual_seed(0))

    def call() -> None:
        with torch.no_grad():
            model(ids)

    return call


def train_step(dtype: str, tokens: int) -> Callable[[], object]:
    from peft import LoraConfig, get_peft_model

    model = load_model("smollm2-135m", dtype=dtype).model
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    ids = torch.randint(100, 40000, (1, tokens), generator=torch.Generator().manual_seed(0))

    def call() -> None:
        model(ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)

    return call


def interleaved(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Each call once to warm up, then ``reps`` rounds of every call in turn."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            times[name].append(seconds(call))
    return times


def ratios(times: dict[str, list[float]], what: str) -> dict:
    per_rep = [b / f for b, f in zip(times[f"{what} bf16"], times[f"{what} fp32"], strict=True)]
    return median_ci(per_rep)


def report(result: dict) -> str:
    lines = [
        "# bf16 against fp32 on this CPU",
        "",
        f"`{result['command']}`; {result['provenance']['machine']}, CPU {result['provenance']['cpu']}, flags "
        f"{result['provenance']['cpu_flags']}; torch {result['provenance']['torch_version']}, "
        f"{result['provenance']['torch_threads']} threads; code {result['provenance']['git_sha']}; "
        f"oneDNN bf16 matmuls here: {result['fast_bf16']}; {result['started']} to {result['ended']} UTC.",
        "",
        f"SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to bf16 / to fp32); {result['reps']} interleaved repetitions,"
        " medians [95% bootstrap CI] in seconds; ratio = median of the per-repetition ratios bf16 / fp32.",
        "",
        "| what | fp32 s | bf16 s | bf16 / fp32 |",
        "|---|---|---|---|",
    ]
    for what, label in result["labels"].items():
        f, b, r = result["seconds"][f"{what} fp32"], result["seconds"][f"{what} bf16"], result["ratios"][what]
        lines.append(
            f"| {label} | {f['median']:.4g} [{f['low']:.4g}, {f['high']:.4g}] | {b['median']:.4g} [{b['low']:.4g}, "
            f"{b['high']:.4g}] | {r['median']:.2f} [{r['low']:.2f}, {r['high']:.2f}] |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--kernel-tokens", type=int, default=1024)
    parser.add_argument("--prefill-tokens", type=int, default=2048)
    parser.add_argument("--train-tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/cpu_dtype_speed")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    times = interleaved(kernels(args.kernel_tokens), args.reps)
    times |= interleaved({f"prefill {d}": prefill(d, args.prefill_tokens) for d in DTYPES}, args.reps)
    times |= interleaved({f"train {d}": train_step(d, args.train_tokens) for d in DTYPES}, args.reps)
    labels = {
        "linear": f"linear {args.kernel_tokens} x 576 by 1536 x 576",
        "bmm": f"bmm 9 x {args.kernel_tokens} x 64 by 9 x 64 x {args.kernel_tokens}",
        "prefill": f"prefill {args.prefill_tokens} tokens",
        "train": f"LoRA r=16 training step, forward + backward of {args.train_tokens} tokens",
    }
    result = {
        "command": "python benchmarks/cpu_dtype_speed.py "
        f"--reps {args.reps} --kernel-tokens {args.kernel_tokens} --prefill-tokens {args.prefill_tokens} "
        f"--train-tokens {args.train_tokens}",
        "started": started,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "reps": args.reps,
        "fast_bf16": fast_bf16(),
        "provenance": current(),
        "labels": labels,
        "seconds": {name: median_ci(values) for name, values in times.items()},
        "ratios": {what: ratios(times, what) for what in labels},
    }
    write_outputs(args.out, result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
