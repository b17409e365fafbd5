"""kvpress is the oracle for the cache methods it also has: same kept tokens, same next-token logits.

The tiny Llama is saved as a Hugging Face folder, kvpress 0.5.5 runs in its own virtual environment
(transformers 5.2; built here on first use, ~2 min) through ``benchmarks/kvpress_driver.py``, and our
methods compress the same token ids. Compared per (instance, press, question mode): the positions each
layer and KV head keeps (exactly) and the logits of the first answer token (float32, 1e-4).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest
import torch

from longreach import tokens
from longreach.methods import parse_stack
from longreach.models import adapter
from longreach.tasks import parse_task

ROOT = Path(__file__).resolve().parent.parent
PAIRS = {  # kvpress press -> our spec at ratio 0.5
    "none": "none",
    "snapkv": "snapkv:compression_ratio=0.5",
    "streaming": "streaming:compression_ratio=0.5",
    "knorm": "knorm:compression_ratio=0.5",
    "observed": "h2o:compression_ratio=0.5:recent=0",
    "pyramid": "pyramid:compression_ratio=0.5",
}
MODES = ("aware", "agnostic")


def _kvpress_python() -> Path:
    spec = importlib.util.spec_from_file_location("kvpress_env", ROOT / "benchmarks" / "kvpress_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ensure_venv()


@pytest.fixture(scope="module")
def peer(tiny, tmp_path_factory):
    """(instances, kvpress rows keyed by (id, press, mode)) for two 400-token needle prompts."""
    folder = tmp_path_factory.mktemp("kvpress")
    tiny.model.save_pretrained(folder / "model")
    task = parse_task("niah_single_2").task
    instances = []
    for index in range(2):
        sample = task.generate(tiny.tokenizer, 400, 0.5, seed=0, index=index)
        ids = tokens.encode(tiny.tokenizer, sample.prompt)
        context = len(tokens.encode(tiny.tokenizer, sample.context))
        split = {"aware": len(ids) - 1, "agnostic": context}
        instances.append({"id": f"s{index}", "ids": ids, "split": split, "max_new_tokens": 4, "stop": []})
    (folder / "instances.jsonl").write_text("".join(json.dumps(i) + "\n" for i in instances))
    job = {
        "model_dir": str(folder / "model"),
        "dtype": "fp32",
        "threads": 1,
        "instances": str(folder / "instances.jsonl"),
        "presses": [[name, 0.0 if name == "none" else 0.5] for name in PAIRS],
        "modes": list(MODES),
        "strategy": "shared",
        "out": str(folder / "out.jsonl"),
        "record_positions": True,
    }
    (folder / "job.json").write_text(json.dumps(job))
    python = _kvpress_python()
    subprocess.run([str(python), str(ROOT / "benchmarks" / "kvpress_driver.py"), str(folder / "job.json")], check=True)
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text().splitlines()]
    return instances, {(r["id"], r["press"], r["mode"]): r for r in rows}


def _ours(tiny, instance: dict, spec: str, mode: str) -> tuple[list[list[list[int]]] | None, torch.Tensor]:
    """(kept positions per layer and KV head, first-answer-token logits) from our method on the same ids."""
    ids = torch.tensor([instance["ids"]])
    split = instance["split"][mode]
    method = parse_stack(spec).of_kind("cache")
    inputs = []
    with torch.inference_mode():
        with adapter.after_attention(tiny.model, lambda observed, _cache: inputs.append(observed)):
            cache = adapter.forward(tiny.model, ids[:, :split])[1]
        positions = None
        if method is not None:
            positions = []
            for observed in inputs:
                keys, values = adapter.layer_kv(cache, observed.layer)
                kept = method.select(observed, keys, values, len(inputs))
                positions.append(kept[0].tolist() if kept is not None else None)
            for observed in inputs:
                method.compress_layer(observed, cache, len(inputs))
        logits, _ = adapter.forward(tiny.model, ids[:, split:], cache, start=split)
    return positions, logits[0, -1].float()


def test_the_uncompressed_model_is_the_same_in_both_environments(tiny, peer):
    instances, rows = peer
    for instance in instances:
        for mode in MODES:
            _, logits = _ours(tiny, instance, "none", mode)
            theirs = torch.tensor(rows[(instance["id"], "none", mode)]["first_logits"])
            torch.testing.assert_close(logits, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("press", [p for p in PAIRS if p != "none"])
@pytest.mark.parametrize("mode", MODES)
def test_same_kept_tokens_and_logits_as_kvpress(tiny, peer, press, mode):
    instances, rows = peer
    for instance in instances:
        row = rows[(instance["id"], press, mode)]
        positions, logits = _ours(tiny, instance, PAIRS[press], mode)
        assert positions == row["kept_positions"], f"{press} keeps other tokens than kvpress ({instance['id']})"
        if row.get("error"):
            # kvpress 0.5.5 + transformers 5.2 cannot read a multi-token question on PyramidKV's per-layer
            # lengths (one mask built from layer 0); we read it token by token and still answer.
            assert press == "pyramid" and mode == "agnostic", row["error"]
            assert torch.isfinite(logits).all()
            continue
        torch.testing.assert_close(logits, torch.tensor(row["first_logits"]), atol=1e-4, rtol=1e-4)
        none = torch.tensor(rows[(instance["id"], "none", mode)]["first_logits"])
        assert not torch.allclose(logits, none, atol=1e-4), "half the cache evicted should change the logits"
