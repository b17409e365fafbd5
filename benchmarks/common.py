"""What the benchmark scripts share: a median with its bootstrap interval, and writing a result as JSON + Markdown.

The scripts run as ``python benchmarks/NAME.py``, so this module is found next to them.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from longreach.report.stats import bootstrap


def median_ci(values: list[float]) -> dict:
    """``{"median", "low", "high", "n", "values"}``: the median of ``values`` and its 95% bootstrap interval."""
    low, high = bootstrap(values)
    return {"median": statistics.median(values), "low": low, "high": high, "n": len(values), "values": values}


def write_outputs(out: Path, result: dict, markdown: str) -> None:
    """``out``.json (the result, provenance included) and ``out``.md (its report), folders made as needed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown)


def provenance_line(result: dict) -> str:
    """The report's line saying what ran where: command, machine, CPU and flags, torch and transformers, threads,
    code and the UTC start and end (``result`` holds ``command``, ``started``, ``ended`` and ``provenance``)."""
    p = result["provenance"]
    return (
        f"`{result['command']}`; {p['machine']}, CPU {p['cpu']}, flags {p['cpu_flags']}; torch {p['torch_version']}, "
        f"transformers {p['transformers_version']}, {p['torch_threads']} threads; code {p['git_sha']}; "
        f"{result['started']} to {result['ended']} UTC."
    )
