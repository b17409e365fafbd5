"""How fast an exact-length instance is generated, per task family, with the SmolLM2 tokenizer (49K BPE).

Usage: ``python benchmarks/generator_speed.py [--lengths 131072,1048576] [--repeats 3] [--tasks a,b]``.
Writes ``benchmarks/results/generator_speed.json``: for each (task, length) the median, min and max wall
seconds of ``task.generate`` (tokenizer already loaded), the realized token count (checked equal to the
target) and how many full tokenizations the fitter needed, plus provenance. The machine is shared, so
timings are noisy: the median of ``repeats`` runs is the number to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from longreach import tokens
from longreach.models import load_tokenizer, resolve
from longreach.results.provenance import current as environment
from longreach.tasks import parse_task

DEFAULT_TASKS = (
    "passkey,niah_single_1,niah_single_2,niah_single_3,niah_multikey_2,niah_multikey_3,nt_single,"
    "nt_thread_forward,vt,cwe,fwe,bio_retrieve,db_count,tsort,confusers,golden_thread_diary"
)
RESULTS = Path(__file__).parent / "results" / "generator_speed.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="131072,1048576")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default=DEFAULT_TASKS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tokenizer = load_tokenizer(resolve("smollm2-135m"))
    rows = []
    for name in args.tasks.split(","):
        task = parse_task(name).task
        for length in (int(x) for x in args.lengths.split(",")):
            seconds, sample = [], None
            for repeat in range(args.repeats):
                start = time.perf_counter()
                sample = task.generate(tokenizer, length, 0.5, seed=0, index=repeat)
                seconds.append(time.perf_counter() - start)
            exact = tokens.count(tokenizer, sample.prompt) == length == sample.meta["realized_tokens"]
            row = {
                "task": name,
                "family": task.family,
                "context_length": length,
                "median_seconds": round(statistics.median(seconds), 3),
                "min_seconds": round(min(seconds), 3),
                "max_seconds": round(max(seconds), 3),
                "repeats": args.repeats,
                "length_exact": exact,
                "full_tokenizations": sample.meta.get("fit_full_tokenizations"),
                "prompt_chars": len(sample.prompt),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    document = {"provenance": {**environment(), "tokenizer": "smollm2-135m"}, "results": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
