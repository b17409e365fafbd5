"""A read continued on top of a kept prefix: the engine's split attention against transformers' one masked call.

With ``reuse_prefix`` (every study stage that sets it) a sample whose prompt starts like the last one continues
the kept cache: t new tokens over n = p + t keys. transformers gives ``sdpa`` a (t, n) bool mask for that read, and
the CPU kernel then computes every block (none skipped as in a causal read from scratch) after making a t x n
float mask. The engine's ``continued_attention`` speedup (``longreach.models.adapter.sdpa.continued_sdpa``) runs
it as the new queries over the cached keys without a mask plus over their own keys under the causal kernel,
merged by log-sum-exp. This script reads one passkey prompt three ways, interleaved: from scratch (no kept
prefix), continued with ``continued_attention`` off ("masked") and on ("split"), and reports prefill seconds
(medians, 95% bootstrap CIs), the per-repeat ratio split / masked, the answers, and each way's peak RSS in a child
process of its own. SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to ``--dtype``).

Run it alone: ``PYTHONPATH=src python benchmarks/continued_read.py`` (about 14 minutes at 8K in fp32 on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import median_ci, provenance_line, write_outputs

from longreach.engine import SPEEDUPS, Engine
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.models import load_model
from longreach.results.provenance import current
from longreach.tasks import parse_task

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("scratch", "masked", "split")


def prompts(tokenizer: object, length: int, kept: float) -> tuple[str, str]:
    """(the prompt, the start of it that a previous read kept): a passkey sample of ``length`` tokens, needle at
    0.9, and its first ``kept`` share of characters."""
    prompt = parse_task("passkey").task.generate(tokenizer, length, 0.9, seed=0, index=0).prompt
    return prompt, prompt[: int(len(prompt) * kept)]


def read(loaded: object, way: str, prompt: str, prefix: str) -> tuple[float, int, str]:
    """(prefill seconds, reused tokens, answer) of ``prompt`` read ``way``."""
    speedups = SPEEDUPS if way == "split" else tuple(s for s in SPEEDUPS if s != "continued_attention")
    engine = Engine(loaded, reuse_prefix=way != "scratch", speedups=speedups)
    stack = parse_stack("none")
    if way != "scratch":
        engine.generate(Request(prefix, 1), stack)
    generation = engine.generate(Request(prompt, 8), stack)
    return generation.prefill_seconds, generation.reused_tokens, generation.text


def peak_rss_mb(way: str, args: argparse.Namespace) -> float:
    """Peak RSS (MiB) of a child process that loads the model and reads the prompt ``way`` once."""
    command = [sys.executable, __file__, "--child", way, "--length", str(args.length), "--kept", str(args.kept)]
    command += ["--dtype", args.dtype]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rss_mb"]


def measure(args: argparse.Namespace) -> dict:
    loaded = load_model("smollm2-135m", dtype=args.dtype)
    prompt, prefix = prompts(loaded.tokenizer, args.length, args.kept)
    read(loaded, "split", prompt[:2000], prompt[:1000])  # warm-up
    runs: dict[str, list] = {way: [] for way in WAYS}
    answers: dict[str, list] = {way: [] for way in WAYS}
    reused: dict[str, int] = {}
    ratios = []
    for repeat in range(args.repeats):
        for way in WAYS:
            seconds, reused[way], text = read(loaded, way, prompt, prefix)
            runs[way].append(seconds)
            answers[way].append(text)
            print(f"repeat {repeat}: {way} {seconds:.1f} s, {reused[way]} tokens reused", flush=True)
        ratios.append(runs["split"][-1] / runs["masked"][-1])
    rss = {way: peak_rss_mb(way, args) for way in WAYS}
    return {
        "prompt_tokens": len(loaded.tokenizer(prompt)["input_ids"]),
        "reused": reused,
        "seconds": runs,
        "ratio": ratios,
        "answers": answers,
        "peak_rss_mb": rss,
    }


def report(result: dict) -> str:
    r = result["runs"]
    cells = {way: median_ci(r["seconds"][way]) for way in WAYS}
    ratio = median_ci(r["ratio"])
    rows = [
        f"| {way} | {r['reused'][way]} | {c['median']:.1f} [{c['low']:.1f}, {c['high']:.1f}] | "
        f"{r['peak_rss_mb'][way]:.0f} | {r['answers'][way][0]!r} |"
        for way, c in cells.items()
    ]
    same = all(len(set(a)) == 1 for a in r["answers"].values()) and len({a[0] for a in r["answers"].values()}) == 1
    return (
        "\n".join(
            [
                "# A read continued on top of a kept prefix: split attention against one masked call",
                "",
                provenance_line(result),
                "",
                f"{result['model']} in {result['dtype']}; one passkey prompt of {r['prompt_tokens']} tokens (needle "
                f"at depth 0.9), read from scratch or continued from a kept read of its first {result['kept']:.0%} "
                f"of characters; prefill seconds over {len(r['ratio'])} interleaved repeats, medians [95% bootstrap "
                "CI]; peak RSS of one read in a child process of its own (model load included).",
                "",
                "| way | tokens reused | prefill s | peak RSS MiB | answer |",
                "|---|---|---|---|---|",
                *rows,
                "",
                f"split / masked, per repeat: {ratio['median']:.2f} [{ratio['low']:.2f}, {ratio['high']:.2f}]; "
                f"the same answer every way and repeat: {same}.",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=8192)
    parser.add_argument("--kept", type=float, default=0.125, help="share of the prompt's characters kept before")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/continued_read")
    args = parser.parse_args()
    if args.child:
        loaded = load_model("smollm2-135m", dtype=args.dtype)
        read(loaded, args.child, *prompts(loaded.tokenizer, args.length, args.kept))
        print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
        return
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    runs = measure(args)
    result = {
        "command": f"python benchmarks/continued_read.py --length {args.length} --kept {args.kept} --repeats "
        f"{args.repeats} --dtype {args.dtype}",
        "started": started,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized)",
        "dtype": args.dtype,
        "kept": args.kept,
        "provenance": current(),
        "runs": runs,
    }
    write_outputs(args.out, result, report(result))
    print(report(result))


if __name__ == "__main__":
    main()
