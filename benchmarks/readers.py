"""Issue 5 benchmark: chunked readers on SmolLM2-135M (native 8K) far past its window, on 2 CPU cores.

Stages (resumable longreach sweeps under runs/bench-readers/):
  passkey3   infiniretri at 16K, 32K, 64K, 128K, depths 0, 0.44, 1 (the first 3 of the 10 below)
  passkey    the same lengths, 10 samples (one per depth over [0, 1]; same store, so passkey3 is reused)
  others     longheads and landmark at 16K and 32K, 3 samples (their full-KV prefill costs minutes a sample)
  multikey   niah_multikey_1 with infiniretri at 32K and 64K, 10 samples
  threading  nt_thread_forward with infiniretri at 32K and 64K, 5 samples (when that task is registered)
  moonshot   one passkey sample at 1M tokens with infiniretri
The summary (scores, seconds and peak RSS per length, the linearity and memory ratios, wall times,
provenance) goes to benchmarks/results/readers.json and .md; sweep reports under benchmarks/results/readers/.
With --device cuda: stores under runs/bench-readers-cuda/, summary readers_cuda.{json,md}, reports readers_cuda/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import time
from pathlib import Path

from longreach.report import render_report
from longreach.runner import SweepConfig, run_sweep
from longreach.runner.provenance import environment
from longreach.tasks import TASKS

MODEL = "smollm2-135m"
ROOT = Path("runs/bench-readers")
RESULTS = Path("benchmarks/results")
DEPTHS = tuple(round(i / 9, 4) for i in range(10))
READER = "infiniretri"
FIRST = (DEPTHS[0], DEPTHS[4], DEPTHS[9])  # three depths at every length before the other seven
DEVICE = "cpu"
NAME = "readers"
STORE_PROVENANCE: dict = {}  # with a GPU: the provenance its sweeps recorded
STAGES = {
    "passkey3": dict(
        tasks=("passkey",), lengths=(16384, 32768, 65536, 131072), methods=(READER,), depths=FIRST, out="passkey"
    ),
    "passkey": dict(tasks=("passkey",), lengths=(16384, 32768, 65536, 131072), methods=(READER,), depths=DEPTHS),
    "others": dict(
        tasks=("passkey",), lengths=(16384, 32768), methods=("longheads", "landmark"), depths=(0.1, 0.5, 0.9)
    ),
    "multikey": dict(tasks=("niah_multikey_1",), lengths=(32768, 65536), methods=(READER,), depths=DEPTHS),
    "threading": dict(
        tasks=("nt_thread_forward",), lengths=(32768, 65536), methods=(READER,), depths=(0.1, 0.3, 0.5, 0.7, 0.9)
    ),
    "moonshot": dict(tasks=("passkey",), lengths=(1048576,), methods=(READER,), depths=(0.5,)),
}


def run_stage(name: str, report_only: bool = False) -> dict:
    spec = STAGES[name]
    out = ROOT / spec.get("out", name)
    config = SweepConfig(
        model=MODEL,
        tasks=spec["tasks"],
        lengths=spec["lengths"],
        out=out,
        methods=spec["methods"],
        depths=spec["depths"],
        samples=1,
        dtype="bf16",
        device=DEVICE,
        resume=True,
    )
    start = time.perf_counter()
    if report_only:  # a stopped run: summarise the cells stored so far
        render_report(out, threshold=config.threshold)
        ran = 0
    else:
        ran = run_sweep(config, show_progress=True).ran
    seconds = time.perf_counter() - start if ran else None  # None: every cell was already stored (a re-read)
    report = json.loads((out / "report.json").read_text())
    target = RESULTS / NAME / name
    target.mkdir(parents=True, exist_ok=True)
    for file in ("report.json", "report.md"):
        shutil.copy(out / file, target / file)
    rows = {}
    peaks = gpu_peaks(out) if DEVICE != "cpu" else {}
    for item in report["summary"]:
        cells = [
            c
            for c in report["cells"]
            if (c["method"], c["context_length"], c["task"]) == (item["method"], item["context_length"], item["task"])
        ]
        rows.setdefault(item["method"], {})[str(item["context_length"])] = {
            "score": item["score"],
            "n": item["n"],
            "median_seconds": statistics.median(c["seconds"] for c in cells),
            "peak_rss_mb": max(c["peak_rss_mb"] for c in cells),
        }
        if DEVICE != "cpu":
            rows[item["method"]][str(item["context_length"])]["peak_gpu_mb"] = peaks.get(
                (item["method"], item["context_length"], item["task"]), 0.0
            )
    if DEVICE != "cpu":  # the GPU machine's facts, not those of the machine summarising
        STORE_PROVENANCE.update(report["provenance"], device=DEVICE)
    return {"task": spec["tasks"][0], "seconds": seconds, "rows": rows, "failed": len(report["failed_cells"])}


def gpu_peaks(out: Path) -> dict[tuple[str, int, str], float]:
    """Peak GPU MiB per (method, length, task) from the store's cell meta (the report does not carry it)."""
    peaks: dict[tuple[str, int, str], float] = {}
    with sqlite3.connect(out / "results.sqlite") as db:
        for method, length, task, meta in db.execute("SELECT method, context_length, task, meta FROM cells"):
            key = (method, int(length), task)
            peaks[key] = max(peaks.get(key, 0.0), json.loads(meta or "{}").get("peak_gpu_mb", 0.0))
    return peaks


def ratios(stage: dict) -> dict:
    row = stage["rows"].get(READER, {})
    if "16384" not in row or "131072" not in row:
        return {}
    return {
        "seconds_128k_over_16k": row["131072"]["median_seconds"] / row["16384"]["median_seconds"],
        "peak_rss_128k_over_16k": row["131072"]["peak_rss_mb"] / row["16384"]["peak_rss_mb"],
        **(
            {"peak_gpu_128k_over_16k": row["131072"]["peak_gpu_mb"] / row["16384"]["peak_gpu_mb"]}
            if row["16384"].get("peak_gpu_mb")
            else {}
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--report-only", action="store_true", help="summarise the stored cells, run none")
    args = parser.parse_args()
    global DEVICE, NAME, ROOT
    if args.device != "cpu":
        DEVICE, NAME, ROOT = args.device, "readers_cuda", Path("runs/bench-readers-cuda")
    path = RESULTS / f"{NAME}.json"
    summary = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    summary["provenance"] = {**environment(), "model": MODEL, "native_context_length": 8192, "dtype": "bf16"}
    for name in args.stages.split(","):
        if any(task not in TASKS for task in STAGES[name]["tasks"]):
            summary["stages"][name] = {"skipped": f"task {STAGES[name]['tasks'][0]} is not registered"}
        else:
            summary["stages"][name] = run_stage(name, args.report_only)
        if name in ("passkey3", "passkey"):
            summary["passkey_ratios"] = ratios(summary["stages"][name])
        write(summary, path)


def write(summary: dict, path: Path) -> None:
    summary["provenance"].update(STORE_PROVENANCE)
    gpu_header = " peak GPU MiB |" if DEVICE != "cpu" else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1))
    lines = [
        "# Readers on SmolLM2-135M (native 8K), bf16, "
        + ("2 CPU cores" if DEVICE == "cpu" else summary["provenance"].get("gpu", DEVICE)),
        "",
        f"Provenance: {json.dumps(summary['provenance'])}",
        "",
        "| stage | task | method | length | score | samples | median s/sample | peak RSS MiB |" + gpu_header,
        "|---|---|---|---|---|---|---|---|" + "---|" * bool(gpu_header),
    ]
    for name, stage in summary["stages"].items():
        if "skipped" in stage:
            lines.append(f"| {name} | skipped: {stage['skipped']} | | | | | | |" + " |" * bool(gpu_header))
            continue
        for method, by_length in stage["rows"].items():
            for length, row in sorted(by_length.items(), key=lambda kv: int(kv[0])):
                lines.append(
                    f"| {name} | {stage['task']} | {method} | {int(length) // 1024}K | {row['score']:.2f} | "
                    f"{row['n']} | {row['median_seconds']:.1f} | {row['peak_rss_mb']:.0f} |"
                    + (f" {row.get('peak_gpu_mb', 0):.0f} |" if gpu_header else "")
                )
    if summary.get("passkey_ratios"):
        lines += [
            "",
            "Passkey, infiniretri: " + ", ".join(f"{k} = {v:.2f}" for k, v in summary["passkey_ratios"].items()),
        ]
    lines += [
        "",
        "Wall time per stage (s): "
        + ", ".join(f"{k} {_seconds(v)}" for k, v in summary["stages"].items() if "seconds" in v),
        "",
        "(-: the stage's cells were all stored before this summary was written, e.g. by a GPU machine; see "
        "benchmarks/results/README.md for their wall time)",
    ]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")


def _seconds(stage: dict) -> str:
    return "-" if stage.get("seconds") is None else f"{stage['seconds']:.0f}"


if __name__ == "__main__":
    main()
