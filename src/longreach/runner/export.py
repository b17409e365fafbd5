"""``longreach generate``: write the instances a sweep would run to a JSONL file (tokenizer only, no weights).

Each line is :func:`longreach.tasks.jsonl.instance_line`: the sample's parts (so ``jsonl:FILE`` reads it back
into the same prompts), the coordinates, the family's scorer and the generator's metadata (so it scores the
same), and a canary string so leaks of these files into training data can be detected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from longreach.errors import LongreachError
from longreach.runner.plan import Plan, RunConfig
from longreach.tasks.jsonl import instance_line


def export_instances(config: RunConfig, path: Path) -> int:
    """Write every (task, length, depth, index) instance of ``config`` to ``path``; returns the count."""
    plan = Plan.from_config(config)
    tokenizer = config.backend_spec().load_tokenizer(config.model_settings())
    tasks = {parsed.spec: parsed.task for parsed in plan.tasks}
    cells = [cell for cell in plan.cells("raw") if cell.method == plan.stacks[0].repr]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as handle:
        for cell in cells:
            try:
                sample = tasks[cell.task].generate(
                    tokenizer, cell.context_length, cell.depth or 0.0, config.seed, cell.index
                )
            except LongreachError as exc:
                raise LongreachError(f"{cell.task} at {cell.context_length} tokens: {exc}") from None
            line = instance_line(
                sample,
                cell.task,
                context_length=cell.context_length,
                depth=cell.depth,
                index=cell.index,
                seed=config.seed,
                model=config.model,
            )
            handle.write(json.dumps(line) + "\n")
    os.replace(partial, path)
    return len(cells)
