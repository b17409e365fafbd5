"""Retrieval quality of the ``select`` reader's passage rankers: recall@k of the gold passage, bm25 vs plain MiniLM
embeddings vs situated embeddings (SitEmb-style, MiniLM untrained for it), on a generated task at 1K-32K tokens.

Usage: ``python benchmarks/retrieval_quality.py [--lengths 1024,...,32768] [--queries 24] [--docs 2]``.
Writes ``benchmarks/results/retrieval_quality.{json,md}`` with provenance.

The task needs context to find the gold passage. A document (SmolLM2 tokens, the select reader's own cut: one
passage a paragraph) holds stories: an intro paragraph names a person and their town ("Mira K. Okafor runs the
bakery in Saltmere."), then two or three fact paragraphs refer to them only by pronoun ("She keeps the spare key
under the blue stone by the well."), with unrelated filler paragraphs between stories. Objects repeat across people,
so a query ("Where does Mira K. Okafor keep the spare key?") matches several fact passages by its object and the intro
by the name; only the surroundings tie the gold fact passage to the name. Passages are ranked for each query by
``bm25``, ``plain`` (each passage embedded alone), ``situated:W`` (each passage read with W wordpieces of context on
each side, pooled over its own tokens; ``chunk``: the surroundings trimmed to MiniLM's 512-wordpiece window) and
``situated:W:pi`` (the whole input read at once, position table interpolated past 512). The wide windows run at
the shorter lengths only (``LONGEST``), to keep the whole run near 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from longreach import tokens
from longreach.methods.readers.retrieval import bm25_scores, cosine_scores, embedder
from longreach.methods.readers.select import embed_passages
from longreach.methods.readers.units import cut_units
from longreach.models import load_tokenizer, resolve
from longreach.results.provenance import current as environment

RESULTS = Path(__file__).parent / "results"
FIRST = "Mira Jonas Tomas Ines Kofi Lena Ravi Anya Pablo Yuki Omar Greta Nils Sofia Dmitri Amara Felix Noor".split()
LAST = "Okafor Lindqvist Moreau Haddad Tanaka Novak Brennan Castillo Petrov Osei Varga Kowalski Duarte Fischer".split()
TOWNS = "Saltmere Ashford Brindle Corvale Dunmore Eastwick Fernhollow Glenrock Harrowby Ivydale".split()
JOBS = "bakery,ferry,library,forge,clinic,orchard,post office,mill,school,inn".split(",")
OBJECTS = "spare key,old map,silver ring,logbook,brass compass,family photo,recipe book,winter coat".split(",")
PLACES = [
    "under the blue stone by the well",
    "inside the clock on the mantel",
    "behind the loose brick in the cellar",
    "in a tin box beneath the stairs",
    "in the drawer of the oak desk",
    "on the top shelf of the pantry",
    "in the pocket of an old jacket",
    "under the floorboard near the window",
]
FILLER = [
    "The weather turned cold that week, and the market closed early on most days.",
    "Travellers often stopped at the crossroads to water their horses and trade news.",
    "The river rose after the spring rains and flooded the lower fields for a while.",
    "Every autumn the town held a fair with music, games and long tables of food.",
    "A new road was built along the coast, and carts moved faster than before.",
    "Children played by the harbour while fishing boats came in with the evening tide.",
]
VARIANTS = ("bm25", "plain", "situated:64", "situated:256", "situated:1024:pi")
# the wide windows cost ~5x and ~10x the plain pass on 2 CPU cores: run at the shorter lengths only
LONGEST = {"situated:256": 4096, "situated:1024:pi": 2048}


def document(tokenizer, length: int, rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """Paragraphs up to about ``length`` tokens and the (query, gold fact sentence) pairs."""
    paragraphs, facts, people = [], [], set()
    while True:
        name = f"{rng.choice(FIRST)} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {rng.choice(LAST)}"  # 4536 names
        if name in people:
            continue
        people.add(name)
        pronoun = rng.choice(["She", "He"])
        story = [f"{name} runs the {rng.choice(JOBS)} in {rng.choice(TOWNS)}."]
        for item in rng.sample(OBJECTS, rng.randint(2, 3)):
            sentence = f"{pronoun} keeps the {item} {rng.choice(PLACES)}."
            story.append(f"{sentence} {rng.choice(FILLER)}")
            facts.append((f"Where does {name} keep the {item}?", sentence))
        story += rng.sample(FILLER, 2)
        candidate = paragraphs + ["\n\n".join(story)]
        if tokens.count(tokenizer, "\n\n".join(candidate)) > length and paragraphs:
            break
        paragraphs = candidate
    text = "\n\n".join(paragraphs)
    kept = [(q, s) for q, s in facts if s in text]
    return text + "\n\n", kept


def ranks(scores: np.ndarray, gold: int) -> int:
    """1-based rank of ``gold`` (ties counted against it)."""
    return int((scores >= scores[gold]).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1024,2048,4096,8192,16384,32768")
    parser.add_argument("--queries", type=int, default=24, help="queries per document")
    parser.add_argument("--docs", type=int, default=1, help="documents per length")
    parser.add_argument("--out", type=Path, default=RESULTS / "retrieval_quality.json")
    parser.add_argument("--note", default="", help="how the run was made (machine load, lock), kept in the report")
    args = parser.parse_args()
    started = time.perf_counter()
    tokenizer = load_tokenizer(resolve("smollm2-135m"))
    encoder = embedder()
    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        found: dict[str, list[int]] = {v: [] for v in VARIANTS}
        seconds: dict[str, float] = {v: 0.0 for v in VARIANTS}
        passages = 0
        for doc in range(args.docs):
            rng = random.Random(length * 100 + doc)
            context, facts = document(tokenizer, length, rng)
            cut = cut_units(tokenizer, context, len(context), 128, pack=True)
            candidates = list(range(len(cut.units)))
            passages += len(candidates)
            texts = [cut.text(i) for i in candidates]
            chosen = rng.sample(facts, min(args.queries, len(facts)))
            golds = [next(i for i in candidates if sentence in texts[i]) for _, sentence in chosen]
            for variant in VARIANTS:
                if length > LONGEST.get(variant, length):
                    continue
                start = time.perf_counter()
                if variant == "bm25":
                    scored = [bm25_scores(texts, query) for query, _ in chosen]
                else:
                    parts = variant.split(":")
                    situated, width = parts[0] == "situated", int(parts[1]) if len(parts) > 1 else 1
                    extend = "pi" if parts[-1] == "pi" else "chunk"
                    embedded = embed_passages(cut, candidates, situated, width, 512, extend)  # (p, d)
                    queries = encoder.embed([q for q, _ in chosen])  # (q, d)
                    scored = [cosine_scores(embedded, query) for query in queries]
                seconds[variant] += time.perf_counter() - start
                found[variant] += [ranks(s, g) for s, g in zip(scored, golds, strict=True)]
        for variant in VARIANTS:
            if not found[variant]:
                continue
            rank = np.array(found[variant])
            rows.append(
                {
                    "context_length": length,
                    "variant": variant,
                    "queries": len(rank),
                    "passages_per_doc": passages / args.docs,
                    "recall@1": round(float((rank <= 1).mean()), 3),
                    "recall@5": round(float((rank <= 5).mean()), 3),
                    "recall@20": round(float((rank <= 20).mean()), 3),
                    "mrr": round(float((1 / rank).mean()), 3),
                    "seconds": round(seconds[variant], 2),
                }
            )
            print(rows[-1], flush=True)
    wall = round(time.perf_counter() - started, 1)
    report = {"rows": rows, "wall_seconds": wall, "arguments": vars(args) | {"out": str(args.out)}}
    report["provenance"] = environment()
    if args.note:
        report["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {wall} s")


def markdown(report: dict) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in report["rows"]))
    lengths = list(dict.fromkeys(r["context_length"] for r in report["rows"]))
    by = {(r["context_length"], r["variant"]): r for r in report["rows"]}
    lines = [
        "# Retrieval quality: recall of the gold passage (select reader's rankers)",
        "",
        "Generated task (benchmarks/retrieval_quality.py): the gold passage names its person only by pronoun; the",
        "name is in the story's intro paragraph. Cells: recall@1 / recall@5 / MRR of the gold passage. "
        f"Wall time {report['wall_seconds']} s.",
        "",
        "| tokens | passages | queries | " + " | ".join(variants) + " |",
        "|---|---|---|" + "---|" * len(variants),
    ]
    for length in lengths:
        cells = [_cell(by.get((length, v))) for v in variants]
        first = by[length, variants[0]]
        lines.append(f"| {length} | {first['passages_per_doc']:.0f} | {first['queries']} | " + " | ".join(cells) + " |")
    seconds = {v: sum(r["seconds"] for r in report["rows"] if r["variant"] == v) for v in variants}
    lines += ["", "Ranking seconds (all lengths): " + ", ".join(f"{v} {s:.1f}" for v, s in seconds.items()), ""]
    if report.get("note"):
        lines += [f"Run note: {report['note']}", ""]
    p = report["provenance"]
    lines.append(f"Provenance: {json.dumps({k: p[k] for k in sorted(p) if not isinstance(p[k], dict)})}")
    return "\n".join(lines) + "\n"


def _cell(row: dict | None) -> str:
    return "-" if row is None else f"{row['recall@1']:.2f} / {row['recall@5']:.2f} / {row['mrr']:.2f}"


if __name__ == "__main__":
    main()
