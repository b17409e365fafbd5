"""Issue 4 benchmark: KV-cache compression in longreach head to head with kvpress, on the same instances.

SmolLM2-135M (bf16), niah_multikey_1 and passkey at 4K and 8K, 10 instances per (task, length) (one per depth,
depths spread over [0, 1]), compression ratios 0.5 and 0.75, question-aware and question-agnostic.

Stages (each resumable; rerun the script to continue a killed run):
  export    ``longreach generate`` writes the instances (JSONL: context, question, answers); the sweep's own
            instances are checked to be the same text, and kvpress gets our token ids for them.
  longreach one resumable sweep per length into runs/bench-kvcache/longreach (methods interleaved per sample and
            mode, so every method compresses one shared read of the sample: HFBackend's reuse_prefix).
  kvpress   benchmarks/kvpress_driver.py in kvpress's own venv (built by benchmarks/kvpress_env.py), strategy
            "shared": one read per (instance, mode) whose per-layer hook calls every press's ``compress``.
  sparse    (not in the default stages) the attention methods kvpress lacks, on the same instances: moa (a plan
            profiled on SmolLM2 for a 50% cache at 4K and 8K by ``longreach moa-plan``, made first if missing)
            in both modes, and squeezed (sparsity 0.5) question-agnostic (its setting: a fixed context clustered
            before the questions).
  timing    prefill seconds, decode tokens/s and peak RSS without any sharing: passkey 8K, 3 instances,
            question-aware, ratio 0.5, every method run on its own (longreach: no reuse; kvpress: ``with press``).
  report    benchmarks/results/kv_cache.json and .md: the side-by-side table, the targets, wall times, provenance.

Usage: OMP_WAIT_POLICY=PASSIVE python benchmarks/kv_cache.py [--stages ...] [--lengths 4096,8192]
On a shared, oversubscribed machine OpenMP's default spin-waiting made a SmolLM2 decode step 40x slower
(7 s instead of 0.17 s with 2 threads); PASSIVE waiting is recorded in the provenance and used for both tools.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from longreach import tokens
from longreach.methods import parse_stack
from longreach.models import load_tokenizer, resolve
from longreach.runner import SweepConfig, run_sweep
from longreach.runner.export import export_instances
from longreach.runner.provenance import environment
from longreach.runner.store import ResultsStore
from longreach.tasks import parse_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kvpress_env import ensure_venv  # noqa: E402

MODEL = "smollm2-135m"
DTYPE = "bf16"
TASKS = ("niah_multikey_1", "passkey")
LENGTHS = (4096, 8192)
RATIOS = (0.5, 0.75)
MODES = ("aware", "agnostic")
DEPTHS = tuple(round(i / 9, 4) for i in range(10))
TIMING_DEPTHS = (0.2, 0.5, 0.8)
ROOT = Path("runs/bench-kvcache")
RESULTS = Path("benchmarks/results")
DRIVER = Path(__file__).resolve().parent / "kvpress_driver.py"

# (longreach spec template, kvpress press or None); {r} is the compression ratio
PAIRS = [
    ("snapkv:compression_ratio={r}", "snapkv"),
    ("snapkv:compression_ratio={r}:window=32:kernel=7:pooling=max", None),  # SnapKV's LongBench setting
    ("pyramid:compression_ratio={r}", "pyramid"),
    ("streaming:compression_ratio={r}", "streaming"),
    ("knorm:compression_ratio={r}", "knorm"),
    ("h2o:compression_ratio={r}:recent=0", "observed"),
    ("h2o:compression_ratio={r}", None),
]
UNPAIRED = ["quantized", "quantized:bits=4"]
MOA_PLAN = ROOT / "moa-smollm2-135m-keep0.5.json"
SPARSE = {f"moa:plan={MOA_PLAN}": MODES, "squeezed:sparsity=0.5": ("agnostic",)}


def longreach_rows(ratios: tuple[float, ...] = RATIOS) -> list[str]:
    """Every longreach method of the grid; ``none`` last, so it answers from the cache methods' shared read."""
    rows = [template.format(r=r) for r in ratios for template, _ in PAIRS]
    return [parse_stack(spec).repr for spec in rows + UNPAIRED] + ["none"]


def kvpress_rows(ratios: tuple[float, ...] = RATIOS) -> list[list]:
    return [["none", 0.0]] + [[press, r] for r in ratios for _, press in PAIRS if press]


def export(lengths: tuple[int, ...]) -> dict:
    """Write the instances with ``longreach generate``'s library call; check the sweep generates the same text."""
    out = ROOT / "instances.jsonl"
    config = SweepConfig(model=MODEL, tasks=TASKS, lengths=lengths, out=ROOT, depths=DEPTHS, samples=1, seed=0)
    count = export_instances(config, out)
    tokenizer = load_tokenizer(resolve(MODEL))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for line in lines:
        task = parse_task(line["task"]).task
        sample = task.generate(tokenizer, line["context_length"], line["depth"], line["seed"], line["index"])
        if (sample.context, sample.question) != (line["context"], line["question"]):
            raise SystemExit(f"exported instance differs from the sweep's: {line['task']} {line['depth']}")
    return {"instances": count, "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}


def run_longreach(lengths: tuple[int, ...], modes: tuple[str, ...] = MODES) -> float:
    started = time.perf_counter()
    for length in lengths:
        config = SweepConfig(
            model=MODEL,
            tasks=TASKS,
            lengths=(length,),
            out=ROOT / "longreach",
            methods=tuple(longreach_rows()),
            depths=DEPTHS,
            samples=1,
            dtype=DTYPE,
            resume=True,
            interleave=True,
            reuse_prefix=True,
            question_modes=modes,
        )
        run_sweep(config, show_progress=True)
    return time.perf_counter() - started


def run_sparse(lengths: tuple[int, ...]) -> float:
    """MoA and Squeezed Attention (each reads every prompt itself: attention methods change the prefill)."""
    started = time.perf_counter()
    if not MOA_PLAN.is_file():
        command = [
            str(Path(sys.executable).parent / "longreach"),
            "moa-plan",
            "--model",
            MODEL,
            "--keep",
            "0.5",
            "--targets",
            "4k,8k",
        ]
        subprocess.run([*command, "--out", str(MOA_PLAN)], check=True)
    for length in lengths:
        for spec, modes in SPARSE.items():
            config = SweepConfig(
                model=MODEL,
                tasks=TASKS,
                lengths=(length,),
                out=ROOT / "sparse",
                methods=(spec,),
                depths=DEPTHS,
                samples=1,
                dtype=DTYPE,
                resume=True,
                question_modes=modes,
            )
            run_sweep(config, show_progress=True)
    return time.perf_counter() - started


def export_timing() -> Path:
    """The timing stage's instances (passkey 8K at TIMING_DEPTHS, the cells our timing sweep runs)."""
    out = ROOT / "instances_timing.jsonl"
    config = SweepConfig(
        model=MODEL, tasks=("passkey",), lengths=(8192,), out=ROOT, depths=TIMING_DEPTHS, samples=1, seed=0
    )
    export_instances(config, out)
    return out


def driver_instances(
    lengths: tuple[int, ...], depths: tuple[float, ...] | None, tasks: tuple[str, ...], source: Path | None = None
) -> Path:
    """The exported instances as token ids (our tokenizer) with the split of each question mode."""
    tokenizer = load_tokenizer(resolve(MODEL))
    rows = []
    for line in map(json.loads, (source or ROOT / "instances.jsonl").read_text().splitlines()):
        if line["context_length"] not in lengths or line["task"] not in tasks:
            continue
        if depths is not None and line["depth"] not in depths:
            continue
        prompt = line["context"] + line["question"]
        ids = tokens.encode(tokenizer, prompt)
        context = tokens.encode(tokenizer, line["context"])
        split = next((i for i, (a, b) in enumerate(zip(context, ids, strict=False)) if a != b), len(context))
        rows.append(
            {
                "id": f"{line['task']}|{line['context_length']}|{line['depth']!r}",
                "ids": ids,
                "prompt": prompt,
                "split": {"aware": len(ids) - 1, "agnostic": split},
                "max_new_tokens": line["max_new_tokens"],
                "stop": line["stop"],
                "answers": line["answers"],
            }
        )
    name = "instances_" + "_".join(map(str, lengths)) + ("_timing" if depths else "") + ".jsonl"
    path = ROOT / "kvpress" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_kvpress(instances: Path, presses: list[list], modes: tuple[str, ...], strategy: str, out: Path) -> float:
    source = resolve(MODEL)
    job = {
        "model_dir": str(source.path.parent),
        "gguf_file": source.path.name,
        "tokenizer_dir": str(source.path.parent),
        "dtype": DTYPE,
        "threads": None,
        "instances": str(instances),
        "presses": presses,
        "modes": list(modes),
        "strategy": strategy,
        "out": str(out),
    }
    path = out.with_suffix(".job.json")
    path.write_text(json.dumps(job, indent=1))
    started = time.perf_counter()
    subprocess.run([str(ensure_venv()), str(DRIVER), str(path)], check=True)
    return time.perf_counter() - started


def run_timing() -> dict:
    """Both tools without sharing on the same 3 passkey 8K instances, ratio 0.5, question-aware."""
    started = time.perf_counter()
    config = SweepConfig(
        model=MODEL,
        tasks=("passkey",),
        lengths=(8192,),
        out=ROOT / "timing",
        methods=tuple(longreach_rows((0.5,))),
        depths=TIMING_DEPTHS,
        samples=1,
        dtype=DTYPE,
        resume=True,
        interleave=True,
        reuse_prefix=False,
        question_modes=("aware",),
    )
    run_sweep(config, show_progress=True)
    ours = time.perf_counter() - started
    instances = driver_instances((8192,), TIMING_DEPTHS, ("passkey",), export_timing())
    if not instances.read_text():
        raise SystemExit(f"no timing instances in {instances}")
    theirs = run_kvpress(instances, kvpress_rows((0.5,)), ("aware",), "timed", ROOT / "kvpress" / "timing.jsonl")
    return {"longreach_seconds": ours, "kvpress_seconds": theirs}


# ---------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _rate(steps: int, seconds: float) -> float | None:
    return steps / seconds if steps and seconds else None


def our_cells(folder: Path) -> list[dict]:
    if not (folder / "results.sqlite").is_file():
        return []
    with ResultsStore(folder) as store:
        return [r for r in store.rows() if r["status"] == "ok"]


def their_rows(path: Path, answers: dict[str, list[str]]) -> list[dict]:
    """kvpress's answers scored with the task's own scorer (match every gold value)."""
    from longreach.tasks.scoring import match_all

    if not path.is_file():
        return []
    rows = []
    for row in map(json.loads, path.read_text().splitlines()):
        if row.get("error") is None:
            row["score"] = match_all(answers[row["id"]], row["text"])
        rows.append(row)
    return rows


def summarize() -> dict:
    tokenizer_answers = {}
    sources = [ROOT / "instances.jsonl", ROOT / "instances_timing.jsonl"]
    lines = [json.loads(line) for path in sources if path.is_file() for line in path.read_text().splitlines()]
    for line in lines:
        tokenizer_answers[f"{line['task']}|{line['context_length']}|{line['depth']!r}"] = line["answers"]
    ours = our_cells(ROOT / "longreach")
    theirs = their_rows(ROOT / "kvpress" / "accuracy.jsonl", tokenizer_answers)
    timing_ours = our_cells(ROOT / "timing")
    timing_theirs = their_rows(ROOT / "kvpress" / "timing.jsonl", tokenizer_answers)

    def group(rows, key):
        out: dict = {}
        for row in rows:
            out.setdefault(key(row), []).append(row)
        return out

    ours_by = group(ours, lambda r: (r["method"], r["mode"], r["task"], r["context_length"]))
    theirs_by = group(
        theirs, lambda r: (r["press"], r["ratio"], r["mode"], r["id"].split("|")[0], int(r["id"].split("|")[1]))
    )
    none_bytes = {
        (r["mode"], r["task"], r["context_length"], r["depth"]): r["meta"]["compressed_kv_bytes"]
        for r in ours
        if r["method"] == "none"
    }
    table = []
    for ratio in RATIOS:
        specs = [(parse_stack(t.format(r=ratio)).repr, press) for t, press in PAIRS]
        for spec, press in [("none", "none")] + specs + [(s, None) for s in UNPAIRED if ratio == RATIOS[0]]:
            for mode in MODES:
                for task in TASKS:
                    for length in LENGTHS:
                        cells = ours_by.get((spec, mode, task, length), [])
                        peer = theirs_by.get((press, 0.0 if press == "none" else ratio, mode, task, length), [])
                        table.append(_row(spec, press, ratio, mode, task, length, cells, peer, none_bytes))
    timing = []
    for spec in longreach_rows((0.5,)):
        press = dict((parse_stack(t.format(r=0.5)).repr, p) for t, p in PAIRS).get(
            spec, "none" if spec == "none" else None
        )
        cells = [r for r in timing_ours if r["method"] == spec]
        peer = [r for r in timing_theirs if r["press"] == press and not r.get("error")] if press else []
        timing.append(
            {
                "method": spec,
                "press": press,
                "n": len(cells),
                "prefill_s": _median([c["prefill_seconds"] for c in cells]),
                "decode_tok_s": _median([_rate(c["meta"]["decode_steps"], c["meta"]["decode_seconds"]) for c in cells]),
                "peak_rss_mb": max((c["peak_rss_mb"] for c in cells), default=None),
                "kvpress_n": len(peer),
                "kvpress_prefill_s": _median([r["prefill_seconds"] for r in peer]),
                "kvpress_decode_tok_s": _median([_rate(r["decode_steps"], r["decode_seconds"]) for r in peer]),
                "kvpress_peak_rss_mb": max((r.get("peak_rss_mb") or 0 for r in peer), default=None) or None,
            }
        )
    sparse_by = group(our_cells(ROOT / "sparse"), lambda r: (r["method"], r["mode"], r["task"], r["context_length"]))
    sparse = []
    for spec, modes in SPARSE.items():  # written in canonical form (parsing moa needs its plan file)
        for mode in modes:
            for task in TASKS:
                for length in LENGTHS:
                    cells = sparse_by.get((spec, mode, task, length), [])
                    if cells:
                        sparse.append(_row(spec, None, 0.0, mode, task, length, cells, [], none_bytes))
    for row in sparse:
        none = next(
            (
                r
                for r in table
                if r["method"] == "none"
                and (r["mode"], r["task"], r["length"]) == (row["mode"], row["task"], row["length"])
            ),
            None,
        )
        row["none_score"] = none["score"] if none else None
    return {"table": table, "sparse": sparse, "timing": timing, "targets": targets(table, timing)}


def _row(spec, press, ratio, mode, task, length, cells, peer, none_bytes) -> dict:
    ok = [r for r in peer if r.get("error") is None]
    ratios = [
        c["meta"]["compressed_kv_bytes"] / none_bytes[(mode, task, length, c["depth"])]
        for c in cells
        if (mode, task, length, c["depth"]) in none_bytes
    ]
    return {
        "method": spec,
        "press": press,
        "ratio": ratio if spec != "none" else 0.0,
        "mode": mode,
        "task": task,
        "length": length,
        "n": len(cells),
        "score": statistics.fmean(c["score"] for c in cells) if cells else None,
        "kv_mib": _median([c["meta"]["compressed_kv_bytes"] / 2**20 for c in cells]),
        "kv_fraction_of_none": _median(ratios),
        "decode_tok_s": _median([_rate(c["meta"]["decode_steps"], c["meta"]["decode_seconds"]) for c in cells]),
        "kvpress_n": len(ok),
        "kvpress_errors": sorted({r["error"] for r in peer if r.get("error")}),
        "kvpress_score": statistics.fmean(r["score"] for r in ok) if ok else None,
        "kvpress_kv_mib": _median([r["compressed_kv_bytes"] / 2**20 for r in peer]),
        "kvpress_decode_tok_s": _median([_rate(r["decode_steps"], r["decode_seconds"]) for r in ok]),
        **_paired(task, length, cells, ok),
    }


def _paired(task: str, length: int, cells: list[dict], ok: list[dict]) -> dict:
    """Both tools' mean scores over the instances both ran (a kvpress run may be partial)."""
    ours = {f"{task}|{length}|{c['depth']!r}": c["score"] for c in cells}
    theirs = {r["id"]: r["score"] for r in ok}
    common = sorted(ours.keys() & theirs.keys())
    return {
        "paired_n": len(common),
        "paired_score": statistics.fmean(ours[i] for i in common) if common else None,
        "paired_kvpress_score": statistics.fmean(theirs[i] for i in common) if common else None,
    }


def targets(table: list[dict], timing: list[dict]) -> dict:
    """The issue's four targets, each with the numbers it was judged on."""
    result: dict = {}
    # 1. ratio 0.5, question-aware, 8K: the best longreach method keeps >= 95% of the uncompressed score
    at8k = [r for r in table if r["mode"] == "aware" and r["length"] == 8192 and r["n"]]
    none = {r["task"]: r["score"] for r in at8k if r["method"] == "none"}
    best = {}
    for r in at8k:
        if r["method"] != "none" and r["ratio"] == 0.5:
            best.setdefault(r["method"], []).append(r["score"] / none[r["task"]] if none.get(r["task"]) else None)
    kept = {m: statistics.fmean(v) for m, v in best.items() if v and None not in v}
    evicting = {m: v for m, v in kept.items() if not m.startswith("quantized")}
    result["best_at_half_aware_8k"] = {
        "kept_fraction_by_method": kept,
        "best_evicting": max(evicting.items(), key=lambda kv: kv[1]) if evicting else None,
        "best_overall_at_most_half_the_bytes": max(
            ((m, v) for m, v in kept.items() if _fraction(table, m) is not None and _fraction(table, m) <= 0.5),
            key=lambda kv: kv[1],
            default=None,
        ),
        "uncompressed": none,
    }
    # 2. every paired press scores at least as well as kvpress's (within one sample), at equal bytes
    paired = []
    for r in table:
        if r["press"] and r["press"] != "none" and r["paired_n"]:
            paired.append(
                {
                    "cell": f"{r['method']} [{r['mode']}] {r['task']} {r['length']}",
                    "n": r["paired_n"],
                    "ours": r["paired_score"],
                    "kvpress": r["paired_kvpress_score"],
                    "within_one_sample": r["paired_score"] >= r["paired_kvpress_score"] - 1 / r["paired_n"] - 1e-9,
                    "equal_bytes": r["kv_mib"] is not None and abs(r["kv_mib"] - r["kvpress_kv_mib"]) < 1e-6,
                }
            )
    result["paired_scores"] = paired
    result["kvpress_failures"] = [
        f"{r['press']} {r['ratio']} [{r['mode']}] {r['task']} {r['length']}: {e}"
        for r in table
        for e in r["kvpress_errors"]
    ]
    result["no_slower_prefill"] = [
        {"method": t["method"], "ours_s": t["prefill_s"], "kvpress_s": t["kvpress_prefill_s"]}
        for t in timing
        if t["press"] and t["press"] != "none"
    ]
    # 3. measured cache bytes fall by the ratio within 2%
    result["bytes_fall_by_ratio"] = [
        {
            "cell": f"{r['method']} [{r['mode']}] {r['task']} {r['length']}",
            "fraction_of_none": r["kv_fraction_of_none"],
            "expected": 1 - r["ratio"],
            "within_2_percent": abs(r["kv_fraction_of_none"] / (1 - r["ratio"]) - 1) <= 0.02,
        }
        for r in table
        if r["method"] != "none" and not r["method"].startswith("quantized") and r["kv_fraction_of_none"]
    ]
    # 4. decode tokens/s not lower than uncompressed (timing stage: same instances, methods back to back)
    base = next((t["decode_tok_s"] for t in timing if t["method"] == "none"), None)
    result["decode_vs_none"] = {
        t["method"]: (t["decode_tok_s"] / base if base and t["decode_tok_s"] else None) for t in timing
    }
    return result


def _fraction(table: list[dict], method: str) -> float | None:
    return _median([r["kv_fraction_of_none"] for r in table if r["method"] == method])


def _count(cell: dict) -> str:
    """``n=10``, or ``n=10/4`` when kvpress ran fewer of the cell's instances than longreach."""
    if cell["press"] and cell["kvpress_n"] and cell["kvpress_n"] != cell["n"]:
        return f"n={cell['n']}/{cell['kvpress_n']}"
    return f"n={cell['n']}"


def markdown(summary: dict) -> str:
    def f(value, digits=2):
        return "" if value is None else f"{value:.{digits}f}"

    lines = [
        "# KV-cache compression: longreach vs kvpress on SmolLM2-135M (bf16, 2 shared CPU cores)",
        "",
        f"Provenance: {json.dumps(summary['provenance'])}",
        "",
        "Same instances for both tools (`longreach generate`, our token ids). Accuracy: mean score over the "
        "cell's instances (n); KV MiB: physical bytes of the cache tensors once the compressed part is read "
        "(median); decode tok/s: median over the cell (shared-read runs; see the timing table for an "
        "unshared comparison). Question-aware: the question is read before compression; question-agnostic: "
        "the context is compressed first.",
        "",
        "Accuracy as longreach / kvpress (n instances per cell, n=ours/kvpress where kvpress ran fewer; kvpress: "
        "`fails` when its run raised; the paired target compares the instances both ran). "
        "KV MiB and decode tok/s as longreach / kvpress. KV / none: our compressed bytes over the uncompressed "
        "cache of the same instance and mode (median).",
        "",
    ]
    header = (
        "| method | kvpress press | mode | length | niah_multikey_1 acc | passkey acc | KV MiB | KV / none "
        "| decode tok/s |"
    )
    for length in LENGTHS:
        lines += [f"### {length // 1024}K tokens", "", header, "|---|---|---|---|---|---|---|---|---|"]
        rows = [r for r in summary["table"] if r["length"] == length]
        keys = list(dict.fromkeys((r["method"], r["press"], r["mode"]) for r in rows))
        for method, press, mode in keys:
            cells = {r["task"]: r for r in rows if (r["method"], r["press"], r["mode"]) == (method, press, mode)}
            if not any(c["n"] for c in cells.values()):
                continue

            def pair(cell: dict, key: str, digits: int = 2) -> str:
                ours = f(cell[key], digits) if cell["n"] else "-"
                if not cell["press"]:
                    return ours
                theirs = f(cell[f"kvpress_{key}"], digits) if cell["kvpress_n"] else "-"
                if key == "score" and cell["kvpress_errors"]:
                    theirs = "fails"
                return f"{ours} / {theirs}"

            accuracy = [pair(cells[t], "score") + f" ({_count(cells[t])})" for t in TASKS]
            first = cells[TASKS[0]]
            lines.append(
                f"| {method} | {press or '-'} | {mode} | {length // 1024}K | {' | '.join(accuracy)} "
                f"| {pair(first, 'kv_mib', 1)} | {f(first['kv_fraction_of_none'], 3)} "
                f"| {pair(first, 'decode_tok_s', 1)} |"
            )
        lines.append("")
    lines += [
        "",
        "## Attention methods kvpress does not have (each reads the prompt itself; same instances)",
        "",
        "| method | mode | task | length | n | accuracy | none's accuracy | KV MiB | KV / none | decode tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.get("sparse", []):
        lines.append(
            f"| {r['method']} | {r['mode']} | {r['task']} | {r['length'] // 1024}K | {r['n']} | {f(r['score'])} "
            f"| {f(r['none_score'])} | {f(r['kv_mib'], 1)} | {f(r['kv_fraction_of_none'], 3)} "
            f"| {f(r['decode_tok_s'], 1)} |"
        )
    lines += [
        "",
        "## Timing without sharing (passkey 8K, question-aware, ratio 0.5, medians over the instances)",
        "",
        "| method | kvpress press | n | longreach prefill s | kvpress prefill s | longreach decode tok/s "
        "| kvpress decode tok/s | longreach peak RSS MiB | kvpress peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in summary["timing"]:
        lines.append(
            f"| {t['method']} | {t['press'] or '-'} | {t['n']} | {f(t['prefill_s'])} | {f(t['kvpress_prefill_s'])} "
            f"| {f(t['decode_tok_s'], 1)} | {f(t['kvpress_decode_tok_s'], 1)} | {f(t['peak_rss_mb'], 0)} "
            f"| {f(t['kvpress_peak_rss_mb'], 0)} |"
        )
    lines += ["", "## Targets", "", "```", json.dumps(summary["targets"], indent=1), "```", ""]
    lines += ["Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in summary["seconds"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default="export,longreach,kvpress,timing,report")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--modes", default=",".join(MODES), help="question modes of the longreach and kvpress stages")
    args = parser.parse_args()
    modes = tuple(args.modes.split(","))
    stages = args.stages.split(",")
    lengths = tuple(int(x) for x in args.lengths.split(","))
    ROOT.mkdir(parents=True, exist_ok=True)
    state_path = ROOT / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"seconds": {}}

    def record(stage: str, seconds: float) -> None:
        state["seconds"][stage] = state["seconds"].get(stage, 0.0) + seconds
        state_path.write_text(json.dumps(state, indent=1))

    if "export" in stages:
        started = time.perf_counter()
        state["export"] = export(LENGTHS)
        record("export", time.perf_counter() - started)
    if "longreach" in stages:
        record("longreach", run_longreach(lengths, modes))
    if "kvpress" in stages:
        for length in lengths:
            instances = driver_instances((length,), None, TASKS)
            seconds = run_kvpress(instances, kvpress_rows(), modes, "shared", ROOT / "kvpress" / "accuracy.jsonl")
            record("kvpress", seconds)
    if "sparse" in stages:
        record("sparse", run_sparse(lengths))
    if "timing" in stages:
        seconds = run_timing()
        record("timing (longreach)", seconds["longreach_seconds"])
        record("timing (kvpress)", seconds["kvpress_seconds"])
    if "report" in stages:
        summary = summarize()
        summary["provenance"] = {
            **environment(),
            "model": MODEL,
            "dtype": DTYPE,
            "instances": state.get("export"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        }
        summary["seconds"] = state["seconds"]
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "kv_cache.json").write_text(json.dumps(summary, indent=1))
        (RESULTS / "kv_cache.md").write_text(markdown(summary))


if __name__ == "__main__":
    main()
