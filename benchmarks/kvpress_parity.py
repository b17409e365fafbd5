"""Parity and interleaved timing of our cache methods against NVIDIA kvpress 0.5.5, on the same token ids.

Usage (the CPU is shared; the lock keeps benchmarks from overlapping)::

    OMP_NUM_THREADS=2 flock /tmp/longreach-bench.lock python benchmarks/kvpress_parity.py --threads 2

Model: ``smollm2-135m`` (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to bf16) in both tools; kvpress runs in its
own venv through the ``kvpress`` backend's worker (transformers 5.2), ours in this process (transformers 5.24).

(a) Parity at ``--parity-length`` (4K), question-aware and question-agnostic, one passkey and one niah_multikey_1
instance: for every paired press, the positions each layer and KV head keeps (ours from the method's own
``select`` on the read, kvpress's found by bitwise key match in its worker), their agreement (the share of
kvpress's kept positions we keep too, per layer and head: mean, minimum, and the share of (layer, head) pairs kept
identically), the divergent positions whose fp32 scores lie within a few bf16 roundings (2^-6 relative) of the layer's
boundary score (ties that kvpress's bf16 scoring breaks another way), the first answer token's logits (same
argmax, largest difference) and the greedy answers (equal texts).

(b) Timing at ``--timing-length`` (8K), question-aware passkey (one instance, the same ids every repetition):
``--reps`` repetitions, each running every press once in both tools, interleaved (ours, kvpress on even
repetitions, kvpress, ours on odd ones, so neither always runs second). Per press: median prefill seconds and
decode tokens/s of each tool with percentile-bootstrap 95% intervals, and the median of the per-repetition ratios
ours / kvpress with its interval; CPU seconds (this process's, the worker's) as a second view on a shared machine.
The ``read_chunk`` rows (ours only, an approximation: tokens read after an eviction see only the kept tokens) are
timed in the same repetitions against kvpress's one-shot press.

Writes ``OUT.json`` (every run, kept after each repetition: ``--render`` redraws the report from it) and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from longreach import tokens
from longreach.backends import ModelSettings, build_backend
from longreach.engine import Engine, question_split
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.models import adapter, load_model
from longreach.report.stats import bootstrap
from longreach.results.provenance import current
from longreach.tasks import parse_task

ROOT = Path(__file__).resolve().parents[1]
MODEL, MODEL_NOTE = "smollm2-135m", "SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to bf16"
VENV = Path.home() / ".cache" / "longreach" / "kvpress-venv"
PAIRS = {  # kvpress press -> our spec doing what it does
    "none": "none",
    "snapkv": "snapkv:compression_ratio=0.5",
    "pyramid": "pyramid:compression_ratio=0.5",
    "streaming": "streaming:compression_ratio=0.5",
    "knorm": "knorm:compression_ratio=0.5",
    "observed": "h2o:compression_ratio=0.5:recent=0",
    "expected": "expected:compression_ratio=0.5",
}
CHUNKED = {  # ours only, timed against kvpress's one-shot press of the same name
    "streaming": "streaming:compression_ratio=0.5:read_chunk=1024",
    "knorm": "knorm:compression_ratio=0.5:read_chunk=1024",
    "snapkv": "snapkv:compression_ratio=0.5:read_chunk=1024",
}
EAGER_GIB = 9.0  # kvpress's ObservedAttentionPress runs eager attention: ~7 GiB at 8K; skip a run below this free
TIE = 2.0**-6  # relative score gap that a few bf16 roundings (8-bit significand) can close


def instance(tokenizer: Any, family: str, length: int, index: int = 0) -> tuple[Any, list[int]]:
    sample = parse_task(family).task.generate(tokenizer, length, 0.5, seed=0, index=index)
    return sample, tokens.encode(tokenizer, sample.prompt)


def request_of(sample: Any, mode: str, max_new_tokens: int) -> Request:
    return Request(sample.prompt, max_new_tokens, (), len(sample.context), mode)  # type: ignore[arg-type]


# ---------------------------------------------------------------- (a) parity
def our_reading(loaded: Any, ids: list[int], split: int, spec: str) -> dict[str, Any]:
    """Our kept positions per layer and KV head, the fp32 scores behind them, and the first answer token's logits."""
    method = parse_stack(spec).of_kind("cache")
    tensor = torch.tensor([ids])
    inputs: list[adapter.LayerInput] = []
    with torch.inference_mode():
        with adapter.after_attention(loaded.model, lambda observed, _cache: inputs.append(observed), True):
            cache = adapter.forward(loaded.model, tensor[:, :split])[1]
        kept, scores = None, None
        if method is not None:
            kept, scores = [], []
            for observed in inputs:
                keys, values = adapter.layer_kv(cache, observed.layer)
                scores.append(method.scores(observed, keys, values)[0])
                chosen = method.select(observed, keys, values, len(inputs))
                kept.append(chosen[0].tolist() if chosen is not None else [list(range(keys.shape[2]))] * keys.shape[1])
            for observed in inputs:
                method.compress_layer(observed, cache, len(inputs))
        inputs.clear()
        logits, _ = adapter.forward(loaded.model, tensor[:, split:], cache, start=split)
    return {"kept": kept, "scores": scores, "logits": logits[0, -1].float()}


def agreement(ours: dict[str, Any], theirs: list[list[list[int]]]) -> dict[str, float]:
    """Kept-set agreement over layers and KV heads, and how many divergent positions are bf16-rounding ties."""
    shares, identical, divergent, ties = [], 0, 0, 0
    for layer, (mine, yours) in enumerate(zip(ours["kept"], theirs, strict=True)):
        for head, (a, b) in enumerate(zip(mine, yours, strict=True)):
            a, b = set(a), set(b)
            shares.append(len(a & b) / max(1, len(b)))
            identical += a == b
            only = sorted(a ^ b)
            if not only:
                continue
            score = ours["scores"][layer][head]
            boundary = float(score[sorted(a)].min()) if a else 0.0
            gap = (score[only] - boundary).abs() <= TIE * max(abs(boundary), 1e-12)
            divergent += len(only)
            ties += int(gap.sum())
    return {
        "agreement_mean": statistics.fmean(shares),
        "agreement_min": min(shares),
        "identical_heads": identical / len(shares),
        "divergent_positions": divergent,
        "divergent_within_bf16": ties / divergent if divergent else 1.0,
    }


def parity(loaded: Any, engine: Engine, kvpress: Any, length: int, max_new_tokens: int) -> list[dict[str, Any]]:
    rows = []
    for family in ("passkey", "niah_multikey_1"):
        sample, ids = instance(loaded.tokenizer, family, length)
        for mode in ("aware", "agnostic"):
            request = request_of(sample, mode, max_new_tokens)
            for press, spec in PAIRS.items():
                stack = parse_stack(spec)
                split = question_split(loaded.tokenizer, request, ids, compressing=True)
                started = time.perf_counter()
                ours = our_reading(loaded, ids, split, spec)
                theirs = kvpress.inspect(ids, split, stack)
                row: dict[str, Any] = {"family": family, "mode": mode, "press": press, "spec": spec, "split": split}
                if ours["kept"] is not None and theirs["kept_positions"] is not None:
                    row.update(agreement(ours, theirs["kept_positions"]))
                if theirs.get("first_logits") is not None:
                    reference = torch.tensor(theirs["first_logits"])
                    row["first_argmax_equal"] = int(ours["logits"].argmax()) == int(reference.argmax())
                    row["first_logits_max_diff"] = float((ours["logits"] - reference).abs().max())
                else:
                    row["kvpress_error"] = theirs.get("error")
                mine = engine.generate(request, stack)
                try:
                    answer = kvpress.generate_ids(ids, split if press != "none" else None, stack, max_new_tokens)
                    row.update(ours_text=mine.text, kvpress_text=answer["text"], text_equal=mine.text == answer["text"])
                except RuntimeError as exc:
                    row.update(ours_text=mine.text, kvpress_text=None, kvpress_error=str(exc))
                row["seconds"] = time.perf_counter() - started
                print(json.dumps({k: v for k, v in row.items() if "text" not in k}), flush=True)
                rows.append(row)
    return rows


# ---------------------------------------------------------------- (b) timing
def time_ours(engine: Engine, request: Request, spec: str) -> dict[str, Any]:
    """One request through our engine; ``compress_seconds``: the method's per-layer compression (scoring and
    gathering, as kvpress's ``compress``), timed around each call (None for a chunked read, which scores inside)."""
    stack = parse_stack(spec)
    method, spent = stack.of_kind("cache"), [0.0]
    if method is not None:
        compress = method.compress_layer

        def timed(*args: Any) -> None:
            start = time.perf_counter()
            compress(*args)
            spent[0] += time.perf_counter() - start

        object.__setattr__(method, "compress_layer", timed)  # this stack's instance only
    cpu = time.process_time()
    generation = engine.generate(request, stack)
    return {
        "prefill_seconds": generation.prefill_seconds,
        "decode_seconds": generation.decode_seconds,
        "decode_steps": generation.decode_steps,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": generation.peak_rss_mb,
        "compress_seconds": None if method is None or method.reads_itself else spent[0],
        "text": generation.text,
    }


def time_kvpress(kvpress: Any, ids: list[int], split: int, spec: str, max_new_tokens: int) -> dict[str, Any]:
    answer = kvpress.generate_ids(ids, split if spec != "none" else None, parse_stack(spec), max_new_tokens)
    keep = ("prefill_seconds", "decode_seconds", "decode_steps", "peak_rss_mb", "compress_seconds", "text")
    return {
        **{key: answer[key] for key in keep},
        "cpu_seconds": answer["prefill_cpu_seconds"] + answer["decode_cpu_seconds"],
    }


def timing(args: argparse.Namespace, loaded: Any, engine: Engine, kvpress: Any, record: dict[str, Any]) -> None:
    sample, ids = instance(loaded.tokenizer, "passkey", args.timing_length)
    request = request_of(sample, "aware", args.max_new_tokens)
    split = question_split(loaded.tokenizer, request, ids, compressing=True)
    runs = record.setdefault("runs", [])
    done = {(run["rep"], run["tool"], run["press"]) for run in runs}
    for rep in range(args.reps):
        for press, spec in PAIRS.items():
            order = ("ours", "kvpress") if rep % 2 == 0 else ("kvpress", "ours")
            for tool in order:
                if (rep, tool, press) in done:
                    continue
                base = {"rep": rep, "tool": tool, "press": press, "spec": spec, "load": os.getloadavg()[0]}
                if tool == "kvpress" and press == "observed" and psutil.virtual_memory().available < EAGER_GIB * 2**30:
                    runs.append({**base, "skipped": f"less than {EAGER_GIB} GiB free for eager attention"})
                    continue
                result = time_ours(engine, request, spec) if tool == "ours" else time_kvpress(
                    kvpress, ids, split, spec, args.max_new_tokens
                )  # fmt: skip
                runs.append({**base, **result})
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "text"}), flush=True)
            if press in CHUNKED and (rep, "ours-chunked", press) not in done:
                base = {"rep": rep, "tool": "ours-chunked", "press": press, "spec": CHUNKED[press]}
                runs.append({**base, "load": os.getloadavg()[0], **time_ours(engine, request, CHUNKED[press])})
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "text"}), flush=True)
        save(args.out, record)


# ---------------------------------------------------------------- report
def estimate(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    low, high = bootstrap(values)
    return f"{statistics.median(values):.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def compression(row: dict[str, Any]) -> str:
    """Median seconds of the per-layer compression calls of a read (ours / kvpress)."""
    if not row["ours_compress"] or not row["kvpress_compress"]:
        return "-"
    return f"{statistics.median(row['ours_compress']):.2f} / {statistics.median(row['kvpress_compress']):.2f}"


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per press (and chunked row): medians, intervals and paired ratios over the repetitions both tools ran."""
    by = {(r["rep"], r["tool"], r["press"]): r for r in runs if "skipped" not in r}
    rows = []
    for tool, press in [("ours", p) for p in PAIRS] + [("ours-chunked", p) for p in CHUNKED]:
        reps = sorted(rep for (rep, t, p) in by if t == tool and p == press and (rep, "kvpress", p) in by)
        mine = [by[(rep, tool, press)] for rep in reps]
        theirs = [by[(rep, "kvpress", press)] for rep in reps]
        if not reps:
            continue

        def speed(run: dict[str, Any]) -> float:
            return run["decode_steps"] / run["decode_seconds"] if run["decode_seconds"] else float("nan")

        prefill_ratio = [a["prefill_seconds"] / b["prefill_seconds"] for a, b in zip(mine, theirs, strict=True)]
        decode_ratio = [speed(a) / speed(b) for a, b in zip(mine, theirs, strict=True)]
        cpu_ratio = [a["cpu_seconds"] / b["cpu_seconds"] for a, b in zip(mine, theirs, strict=True)]
        rows.append(
            {
                "tool": tool,
                "press": press,
                "spec": mine[0]["spec"],
                "n": len(reps),
                "ours_prefill": [r["prefill_seconds"] for r in mine],
                "kvpress_prefill": [r["prefill_seconds"] for r in theirs],
                "prefill_ratio": prefill_ratio,
                "ours_decode": [speed(r) for r in mine],
                "kvpress_decode": [speed(r) for r in theirs],
                "decode_ratio": decode_ratio,
                "cpu_ratio": cpu_ratio,
                "ours_compress": [r["compress_seconds"] for r in mine if r.get("compress_seconds") is not None],
                "kvpress_compress": [r["compress_seconds"] for r in theirs if r.get("compress_seconds")],
                "same_text": all(a["text"] == b["text"] for a, b in zip(mine, theirs, strict=True)),
                "ours_rss": statistics.median(r["peak_rss_mb"] for r in mine),
                "kvpress_rss": statistics.median(r["peak_rss_mb"] for r in theirs),
            }
        )
    return rows


def render(record: dict[str, Any]) -> str:
    settings, provenance = record["settings"], record["provenance"]
    lines = [
        f"# Ours vs kvpress 0.5.5: parity and interleaved timing on {MODEL_NOTE}",
        "",
        f"Command: `{settings['command']}`; wall time {record.get('wall_seconds', 0) / 60:.0f} min.",
        f"Threads: {settings['threads']} torch threads in each tool (OMP_NUM_THREADS={settings['omp']}); "
        f"ours transformers {provenance['transformers_version']}, kvpress {record['kvpress']['kvpress_version']} "
        f"with transformers {record['kvpress']['transformers_version']}, torch {provenance['torch_version']} "
        "in both.",
        "",
        "Provenance: " + json.dumps(provenance),
        "",
        f"## (a) Parity at {settings['parity_length']} tokens (bf16, same ids, same split)",
        "",
        "Agreement: the share of kvpress's kept positions that we keep too, per layer and KV head (mean / min); "
        "identical: (layer, head) pairs kept identically; bf16 ties: divergent positions whose fp32 score lies "
        "within 2^-6 (a few bf16 roundings) of the layer's boundary score (kvpress scores in bf16, we score in fp32).",
        "",
        "| press | family | mode | agreement mean / min | identical heads | divergent (bf16 ties) | first token "
        "same / max abs logit diff | greedy answer equal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record.get("parity", []):
        agree = (
            f"{row['agreement_mean']:.4f} / {row['agreement_min']:.3f}"
            if "agreement_mean" in row
            else "- (no eviction)"
        )
        heads = f"{row['identical_heads']:.3f}" if "identical_heads" in row else "-"
        ties = (
            f"{row['divergent_positions']} ({row['divergent_within_bf16']:.0%})"
            if "divergent_positions" in row
            else "-"
        )
        first = (
            f"{row['first_argmax_equal']} / {row['first_logits_max_diff']:.3f}"
            if "first_argmax_equal" in row
            else f"kvpress failed: {row.get('kvpress_error')}"
        )
        text = row.get("text_equal", f"kvpress failed: {row.get('kvpress_error')}")
        lines.append(
            f"| {row['press']} | {row['family']} | {row['mode']} | {agree} | {heads} | {ties} | {first} | {text} |"
        )
    summary = summarise(record.get("runs", []))
    lines += [
        "",
        f"## (b) Interleaved timing at {settings['timing_length']} tokens (question-aware passkey, "
        f"{settings['max_new_tokens']} new tokens at most)",
        "",
        "Medians over the repetitions with percentile-bootstrap 95% intervals; ratio: median of the per-repetition "
        "ratios ours / kvpress (prefill: < 1 is faster; decode tok/s: > 1 is faster). CPU ratio: CPU seconds of "
        "the whole request, ours / kvpress (less sensitive to other load on the shared CPU). Compression s: the "
        "seconds of the per-layer compression calls of one read (scoring and gathering; kvpress's `compress`), "
        "medians.",
        "",
        "| ours | kvpress press | n | ours prefill s | kvpress prefill s | prefill ratio | ours decode tok/s | "
        "kvpress decode tok/s | decode ratio | CPU ratio | compression s ours / kvpress | same answer | "
        "peak RSS MiB ours / kvpress |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['spec']} | {row['press']} | {row['n']} | {estimate(row['ours_prefill'])} | "
            f"{estimate(row['kvpress_prefill'])} | {estimate(row['prefill_ratio'], 3)} | "
            f"{estimate(row['ours_decode'])} | {estimate(row['kvpress_decode'])} | "
            f"{estimate(row['decode_ratio'], 3)} | "
            f"{estimate(row['cpu_ratio'], 3)} | {compression(row)} | {row['same_text']} | "
            f"{row['ours_rss']:.0f} / {row['kvpress_rss']:.0f} |"
        )
    skipped = [run for run in record.get("runs", []) if "skipped" in run]
    if skipped:
        lines += ["", f"Skipped runs: {len(skipped)} ({skipped[0]['skipped']})."]
    loads = [run["load"] for run in record.get("runs", []) if "load" in run]
    if loads:
        lines += ["", f"Load average (1 min) at the runs' start: median {statistics.median(loads):.1f}, "
                  f"max {max(loads):.1f} on {os.cpu_count()} CPUs."]  # fmt: skip
    lines += ["", "## Targets (issue 18)", ""]
    paired = [row for row in summary if row["tool"] == "ours"]
    for row in paired:
        prefill, decode = statistics.median(row["prefill_ratio"]), statistics.median(row["decode_ratio"])
        lines.append(
            f"- {row['press']}: prefill ratio {prefill:.3f} ({'met' if prefill <= 1.0 else 'missed'}, target <= 1.00); "
            f"decode ratio {decode:.3f} ({'met' if decode >= 1.0 else 'missed'}, target >= 1.00)"
        )
    return "\n".join(lines) + "\n"


def save(out: Path, record: dict[str, Any]) -> None:
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--parity-length", type=int, default=4096)
    parser.add_argument("--timing-length", type=int, default=8192)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--render", action="store_true", help="redraw OUT.md from OUT.json and stop")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "kvpress_parity")
    args = parser.parse_args()
    json_path = args.out.with_suffix(".json")
    record: dict[str, Any] = json.loads(json_path.read_text()) if json_path.exists() else {}
    if not args.render:
        started = time.perf_counter() - record.get("wall_seconds", 0.0)
        torch.set_num_threads(args.threads)
        loaded = load_model(MODEL, "bf16")
        engine = Engine(loaded)
        kvpress = build_backend(f"kvpress:venv={args.venv}:threads={args.threads}", ModelSettings(MODEL, "bf16"))
        record["settings"] = {
            "command": "OMP_NUM_THREADS={omp} flock /tmp/longreach-bench.lock python benchmarks/kvpress_parity.py "
            "--threads {threads} --reps {reps}".format(omp=os.environ.get("OMP_NUM_THREADS"), **vars(args)),
            "threads": args.threads,
            "omp": os.environ.get("OMP_NUM_THREADS"),
            "reps": args.reps,
            "parity_length": args.parity_length,
            "timing_length": args.timing_length,
            "max_new_tokens": args.max_new_tokens,
            "model": MODEL,
            "model_note": MODEL_NOTE,
        }
        record["provenance"], record["kvpress"] = current(), kvpress.facts()
        try:
            if not args.skip_parity and "parity" not in record:
                record["parity"] = parity(loaded, engine, kvpress, args.parity_length, args.max_new_tokens)
                save(args.out, record)
            timing(args, loaded, engine, kvpress, record)
        finally:
            record["wall_seconds"] = time.perf_counter() - started
            save(args.out, record)
            kvpress.close()
    args.out.with_suffix(".md").write_text(render(record))


if __name__ == "__main__":
    main()
