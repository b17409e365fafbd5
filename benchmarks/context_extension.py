"""Issue 3 benchmark: how far SmolLM2-135M (native 8K) reads with each training-free extension method.

Stages (each a resumable longreach sweep under runs/bench-context/, so a killed run continues):
  passkey  16K, every row, 10 samples (one per depth, depths spread over [0, 1]), prefix reuse on
  passkey32 32K: the rows scoring >= 0.5 at 16K plus none and the transformers peers (others are recorded as
           pruned, with their 16K score), same 10 samples
  inside   4K and 8K, every row, same 10 samples (into the passkey store)
  multikey niah_multikey_1 at 4K-32K, 4 samples, the rows of the 32K stage
  timing   8K passkey, every row, 3 samples, methods interleaved, no prefix reuse: prefill overhead vs none
The summary (tables, targets, wall times, provenance) goes to benchmarks/results/context_extension.json and
.md; the sweeps' own report.json files are copied under benchmarks/results/context_extension/.

With --device cuda the sweeps go to runs/bench-context-cuda/ and the summary to context_extension_cuda.{json,md};
no row is pruned at 32K (a GPU affords every row), and --shard i/n runs every n-th row from the i-th, so several
processes share one GPU (they write the same resumable stores). Run the timing stage alone: shards share the GPU.

Rows use one configuration across lengths, planned for 32K (s = 4), as a user would set them: static methods
show their short-input cost, dynamic ones (dynamic, SelfExtend's rule, longrope's short factors) do not.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path

from longreach.runner import SweepConfig, run_sweep
from longreach.runner.provenance import environment

MODEL = "smollm2-135m"
NATIVE = 8192
ROOT = Path("runs/bench-context")
RESULTS = Path("benchmarks/results")
DEPTHS = tuple(round(i / 9, 4) for i in range(10))  # ten depths spread over [0, 1]
LENGTHS = {"timing": 8192, "passkey": (4096, 8192, 16384), "passkey32": 32768, "multikey": (4096, 8192, 16384, 32768)}


def longrope_factors(scale: float, pairs: int = 32, base: float = 1e5, window: int = NATIVE) -> str:
    """A user-given LongRoPE list for SmolLM2: 1 for pairs with >= 32 turns in the window, ``scale`` for
    pairs with < 1 turn, log-linear in between (NTK-by-parts shape; LongRoPE would search these)."""
    factors = []
    for i in range(pairs):
        turns = window / (2 * math.pi * base ** (2 * i / (2 * pairs)))
        ramp = min(1.0, max(0.0, math.log(32 / turns) / math.log(32))) if turns > 0 else 1.0
        factors.append(round(scale**ramp, 4))
    return "/".join(f"{f:g}" for f in factors)


ROWS = [  # the usual zero-shot winners first: on 2 cores the grid takes many hours and runs row by row
    "none",
    "hf:rope_type=dynamic:factor=4",
    "hf:rope_type=yarn:factor=4",
    "yarn:factor=4",
    "dynamic:factor=4",
    "ntk:factor=4",
    "selfextend",
    "linear:factor=4",
    "llama3:factor=4",
    f"longrope:long_factor={longrope_factors(4.0)}:factor=4",
    "abf:scale=8",
    "power",
    "truncated",
]
PEERS = ["none", "hf:rope_type=dynamic:factor=4", "hf:rope_type=yarn:factor=4"]


def sweep(
    name: str,
    tasks: tuple[str, ...],
    lengths: tuple[int, ...],
    methods: list[str],
    depths: tuple[float, ...],
    samples: int,
    *,
    interleave: bool = False,
    reuse: bool = True,
) -> dict:
    out = ROOT / name
    methods = methods[SHARD[0] :: SHARD[1]]
    config = SweepConfig(
        model=MODEL,
        tasks=tasks,
        lengths=lengths,
        out=out,
        methods=tuple(methods),
        depths=depths,
        samples=samples,
        dtype="bf16",
        device=DEVICE,
        resume=True,
        interleave=interleave,
        reuse_prefix=reuse,
    )
    start = time.perf_counter()
    ran = run_sweep(config, show_progress=True).ran
    seconds = time.perf_counter() - start if ran else None  # None: every cell was already stored (a re-read)
    report = json.loads((out / "report.json").read_text())
    target = RESULTS / NAME / name
    target.mkdir(parents=True, exist_ok=True)
    for file in ("report.json", "report.md"):
        shutil.copy(out / file, target / file)
    STORE_PROVENANCE.update(report["provenance"])
    return {"report": report, "seconds": seconds}


def scores(report: dict) -> dict[tuple[str, int], float]:
    return {(s["method"], s["context_length"]): s["score"] for s in report["summary"]}


def canonical(spec: str) -> str:
    from longreach.methods import parse_stack

    return parse_stack(spec).repr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", default="passkey,passkey32,inside,multikey,timing")
    parser.add_argument("--smoke", action="store_true", help="tiny-llama, short lengths, into /tmp (a dry run)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--shard", default="0/1", help="i/n: run rows i, i+n, i+2n, ... (processes sharing a GPU)")
    args = parser.parse_args()
    use_device(args.device, args.shard)
    if "timing" in args.stages.split(",") and SHARD != (0, 1):
        parser.error("the timing stage compares every row with none: run it without --shard")
    if args.smoke:
        smoke()
    stages = args.stages.split(",")
    summary_path = RESULTS / f"{NAME}.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {"stages": {}}
    summary["provenance"] = {
        **environment(),
        "model": MODEL,
        "native_context_length": NATIVE,
        "dtype": "bf16",
        "device": DEVICE,
    }
    summary["rows"] = [canonical(r) for r in ROWS]

    if "timing" in stages:
        run = sweep("timing", ("passkey",), (LENGTHS["timing"],), ROWS, (0.5,), 3, interleave=True, reuse=False)
        cells = run["report"]["cells"]
        prefill = {
            m: statistics.median(c["prefill_seconds"] for c in cells if c["method"] == m)
            for m in {c["method"] for c in cells}
        }
        peak = {m: max(c["peak_rss_mb"] for c in cells if c["method"] == m) for m in prefill}
        summary["stages"]["timing"] = {
            "seconds": run["seconds"],
            "prefill_median_s": prefill,
            "prefill_ratio_vs_none": {m: prefill[m] / prefill["none"] for m in prefill},
            "peak_rss_mb": peak,
        }
        write(summary)

    if "passkey" in stages:  # 16K first: it decides which rows go on to 32K; 4K/8K follow (inside)
        run = sweep("passkey", ("passkey",), LENGTHS["passkey"][-1:], ROWS, DEPTHS, 1)
        summary["stages"]["passkey"] = {"seconds": run["seconds"], "scores": as_table(scores(run["report"]))}
        write(summary)

    passkey16 = {m: s for (m, length), s in table_items(summary, "passkey") if length == LENGTHS["passkey"][-1]}
    survivors = [r for r in ROWS if DEVICE != "cpu" or canonical(r) in PEERS or passkey16.get(canonical(r), 0.0) >= 0.5]
    if "passkey32" in stages:
        run = sweep("passkey32", ("passkey",), (LENGTHS["passkey32"],), survivors, DEPTHS, 1)
        summary["stages"]["passkey32"] = {
            "seconds": run["seconds"],
            "scores": as_table(scores(run["report"])),
            "pruned": {canonical(r): passkey16.get(canonical(r)) for r in ROWS if r not in survivors},
        }
        write(summary)

    if "inside" in stages:  # 4K and 8K: inside the native window every row should keep the none score
        run = sweep("passkey", ("passkey",), LENGTHS["passkey"], ROWS, DEPTHS, 1)
        summary["stages"]["passkey"] = {"seconds": run["seconds"], "scores": as_table(scores(run["report"]))}
        write(summary)

    if "multikey" in stages:
        run = sweep("multikey", ("niah_multikey_1",), LENGTHS["multikey"], survivors, (0.1, 0.4, 0.6, 0.9), 1)
        summary["stages"]["multikey"] = {"seconds": run["seconds"], "scores": as_table(scores(run["report"]))}
        write(summary)


DEVICE = "cpu"
NAME = "context_extension"
STORE_PROVENANCE: dict = {}  # the provenance the sweeps' stores recorded (where the cells ran)
SHARD = (0, 1)  # (i, n): this process runs rows i, i + n, i + 2n, ...


def use_device(device: str, shard: str) -> None:
    """Point the stores and summary at a GPU run's own names and keep this process's shard of the rows."""
    global DEVICE, NAME, ROOT, SHARD
    index, count = (int(x) for x in shard.split("/"))
    DEVICE, SHARD = device, (index, count)
    if device != "cpu":
        NAME, ROOT = "context_extension_cuda", Path("runs/bench-context-cuda")


def smoke() -> None:
    """Point every constant at a seconds-long dry run on tiny-llama (native 2K; lengths / 4)."""
    global MODEL, NATIVE, ROOT, RESULTS, ROWS, PEERS, LENGTHS
    MODEL, NATIVE, ROOT, RESULTS = (
        "tiny-llama",
        2048,
        Path("/tmp/bench-context-smoke"),
        Path("/tmp/bench-context-smoke"),
    )
    shutil.rmtree(ROOT, ignore_errors=True)
    ROWS = [
        r.replace(f"long_factor={longrope_factors(4.0)}", f"long_factor={longrope_factors(4.0, pairs=8)}") for r in ROWS
    ]
    PEERS = [canonical(p) for p in PEERS]
    LENGTHS = {"timing": 2048, "passkey": (1024, 2048, 4096), "passkey32": 8192, "multikey": (1024, 2048, 4096, 8192)}


def as_table(table: dict[tuple[str, int], float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (method, length), score in table.items():
        out.setdefault(method, {})[str(length)] = score
    return out


def table_items(summary: dict, stage: str):
    for method, by_length in summary["stages"].get(stage, {}).get("scores", {}).items():
        for length, score in by_length.items():
            yield (method, int(length)), score


def write(summary: dict) -> None:
    if DEVICE != "cpu" and STORE_PROVENANCE:  # the GPU machine's facts, not those of the machine summarising
        summary["provenance"] = {**STORE_PROVENANCE, "device": DEVICE}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(summary, indent=1))
    (RESULTS / f"{NAME}.md").write_text(markdown(summary))


def markdown(summary: dict) -> str:
    rows = summary["rows"]
    stages = summary["stages"]
    lines = [
        "# Context extension on SmolLM2-135M (native 8K), bf16, "
        + ("2 CPU cores" if DEVICE == "cpu" else f"{summary['provenance'].get('gpu', DEVICE)}"),
        "",
        f"Provenance: {json.dumps(summary['provenance'])}",
        "",
    ]
    lengths = [str(x) for x in LENGTHS["multikey"]]
    passkey = {
        m: {
            **stages.get("passkey", {}).get("scores", {}).get(m, {}),
            **stages.get("passkey32", {}).get("scores", {}).get(m, {}),
        }
        for m in rows
    }
    multikey = stages.get("multikey", {}).get("scores", {})
    timing = stages.get("timing", {})
    lines += [
        "| method | passkey 4K | 8K | 16K | 32K | multikey 4K | 8K | 16K | 32K | prefill 8K s | vs none |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        cells = [_fmt(passkey[m].get(x)) for x in lengths] + [_fmt(multikey.get(m, {}).get(x)) for x in lengths]
        prefill = timing.get("prefill_median_s", {}).get(m)
        ratio = timing.get("prefill_ratio_vs_none", {}).get(m)
        cells += [f"{prefill:.3g}" if prefill else "", f"{ratio:.3f}" if ratio else ""]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    pruned = stages.get("passkey32", {}).get("pruned", {})
    if pruned:
        lines += [
            "",
            "Not run at 32K (passkey < 0.5 at 16K): " + ", ".join(f"{m} ({s:.1f})" for m, s in pruned.items()),
        ]
    lines += [
        "",
        "Wall time per stage (s): " + ", ".join(f"{k} {_seconds(v)}" for k, v in stages.items()),
        "",
        "(-: the stage's cells were all stored before this summary was written, e.g. by a GPU machine; see "
        "benchmarks/results/README.md for their wall time)",
    ]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _seconds(stage: dict) -> str:
    return "-" if stage.get("seconds") is None else f"{stage['seconds']:.0f}"


if __name__ == "__main__":
    main()
