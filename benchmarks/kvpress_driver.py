"""Run kvpress's presses on given token ids, inside kvpress's own virtual environment (transformers < 5.3).

This file imports only torch, transformers and kvpress (never longreach): ``benchmarks/kv_cache.py`` and
``tests/test_kvpress_oracle.py`` run it with the kvpress venv's python (see ``benchmarks/kvpress_env.py``).

The protocol is kvpress's pipeline (``KVPressTextGenerationPipeline._forward``) on token ids we give it, so
both tools read identical tokens: the part to compress (question-aware: the prompt but its last token;
question-agnostic: the context) is read by ``model.model`` with the press's forward hooks, then the rest of
the prompt with explicit positions starting at the uncompressed length, then greedy decoding. Differences
from the pipeline, all applied to longreach too: no chat template and no appended newline (our prompts end
with an answer prefix), and decoding stops at the instance's stop strings as well as at EOS.

Strategies:
  timed   each press separately, its own hooks active during the read (``with press(model)``): kvpress as a
          user runs it; prefill seconds are honest.
  shared  one read per (instance, mode) for all presses: a forward hook calls every press's ``compress`` with
          the same arguments kvpress's own hook passes (``BasePress.forward_hook``) and keeps each press's
          compressed keys and values; each press then answers from its own cache. Same caches as ``timed``
          (a press's hook changes only the cache, not the forward), at a fraction of the compute.
          ObservedAttentionPress needs attention weights, so presses needing them get a second read with
          eager attention (kvpress requires ``attn_implementation="eager"`` for it).

Usage: python kvpress_driver.py JOB.json  (keys: model_dir, gguf_file, dtype, threads, instances, presses
[[name, ratio], ...], modes, strategy, out, record_positions). Output: one JSON line per (instance, press,
ratio, mode), appended, so a killed run resumes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch


def physical_bytes(cache) -> int:
    seen = {}
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def make_press(name: str, ratio: float):
    from kvpress import KnormPress, ObservedAttentionPress, PyramidKVPress, SnapKVPress, StreamingLLMPress

    presses = {
        "snapkv": SnapKVPress,
        "streaming": StreamingLLMPress,
        "knorm": KnormPress,
        "observed": ObservedAttentionPress,
        "pyramid": PyramidKVPress,
    }
    if name == "none":
        return None
    if name not in presses:
        raise SystemExit(f"unknown press {name!r}; valid: none, {', '.join(presses)}")
    return presses[name](compression_ratio=ratio)


def needs_eager(name: str) -> bool:
    return name == "observed"


def load(job: dict):
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[job["dtype"]]
    kwargs = {"gguf_file": job["gguf_file"]} if job.get("gguf_file") else {}
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=dtype, **kwargs).eval()
    model.set_attn_implementation("sdpa")
    return model


def eos_ids(model) -> set[int]:
    value = model.generation_config.eos_token_id
    return set(value if isinstance(value, list) else [value] if value is not None else [])


def decode(model, tokenizer, cache, rest: torch.Tensor, start: int, instance: dict) -> dict:
    """Read ``rest`` (1, t) at positions start.. on ``cache``, then decode greedily (as the pipeline)."""
    positions = torch.arange(start, start + rest.shape[1]).unsqueeze(0)
    logits = model(input_ids=rest, past_key_values=cache, position_ids=positions, logits_to_keep=1).logits
    first_logits = logits[0, -1].float()
    next_id = int(first_logits.argmax())
    new_ids, text, steps, seconds = [], "", 0, 0.0
    position = start + rest.shape[1]
    stops = [s for s in instance.get("stop", [])]
    eos = eos_ids(model)
    while next_id not in eos:
        new_ids.append(next_id)
        text = tokenizer.decode(new_ids, skip_special_tokens=True) if tokenizer else ""
        cut = cut_at_stop(text, stops)
        if cut is not None:
            text = cut
            break
        if len(new_ids) >= instance["max_new_tokens"]:
            break
        began = time.perf_counter()
        logits = model(
            input_ids=torch.tensor([[next_id]]), past_key_values=cache, position_ids=torch.tensor([[position]])
        ).logits
        next_id = int(logits[0, -1].argmax())
        seconds += time.perf_counter() - began
        steps += 1
        position += 1
    return {
        "text": text,
        "new_ids": new_ids,
        "new_tokens": len(new_ids),
        "decode_seconds": seconds,
        "decode_steps": steps,
        "first_logits": first_logits,
    }


def cut_at_stop(text: str, stops: list[str]) -> str | None:
    """The same rule as longreach.backends.base.cut_at_stop: the first stop after some non-blank output."""
    start = len(text) - len(text.lstrip())
    cuts = [c for c in (text.find(stop, start) for stop in stops) if c > start]
    return text[: min(cuts)] if cuts else None


def kept_positions(full_keys: torch.Tensor, kept_keys: torch.Tensor) -> list[list[int]]:
    """For each KV head, the sorted positions of the kept keys in the uncompressed keys (exact row matches)."""
    positions = []
    for head in range(full_keys.shape[1]):
        full, kept = full_keys[0, head], kept_keys[0, head]
        distance = torch.cdist(kept.float(), full.float())
        positions.append(sorted(distance.argmin(dim=-1).tolist()))
    return positions


def reset_peak_rss() -> None:
    """Reset Linux's resident-set high-water mark (as longreach.measure.peak_rss does)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("VmHWM not found")


def run_timed(model, tokenizer, instance: dict, name: str, ratio: float, mode: str) -> dict:
    from transformers import DynamicCache

    ids = torch.tensor([instance["ids"]])
    split = instance["split"][mode]
    press = make_press(name, ratio)
    model.set_attn_implementation("eager" if needs_eager(name) else "sdpa")
    cache = DynamicCache()
    reset_peak_rss()
    began = time.perf_counter()
    with press(model) if press is not None else _null():
        model.model(input_ids=ids[:, :split], past_key_values=cache)
    kv_bytes = physical_bytes(cache)
    try:
        result = decode(model, tokenizer, cache, ids[:, split:], split, instance)
    except RuntimeError as exc:  # e.g. PyramidKV's per-layer lengths with a multi-token question
        model.set_attn_implementation("sdpa")
        return {
            "error": f"RuntimeError: {str(exc).splitlines()[0]}",
            "first_logits": None,
            "compressed_kv_bytes": kv_bytes,
        }
    prefill = time.perf_counter() - began - result["decode_seconds"]
    model.set_attn_implementation("sdpa")
    return {**result, "compressed_kv_bytes": kv_bytes, "prefill_seconds": prefill, "peak_rss_mb": peak_rss_mb()}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def compressing_hook(built: dict, compressed: dict, full_keys: dict):
    """A forward hook calling every press's ``compress`` with the arguments kvpress's own hook passes
    (``BasePress.forward_hook``), keeping each press's result instead of writing it into the cache."""

    def hook(module, args, kwargs, output):
        hidden_states = kwargs["hidden_states"]
        cache = kwargs["past_key_values"]
        layer = module.layer_idx
        keys, values = cache.layers[layer].keys, cache.layers[layer].values
        full_keys[layer] = keys
        for key, press in built.items():
            if press is None:
                compressed[key][layer] = (keys, values)
            else:
                compressed[key][layer] = press.compress(module, hidden_states, keys, values, output[1], kwargs)

    return hook


def run_shared(model, tokenizer, instance: dict, presses: list[tuple[str, float]], mode: str, record: bool):
    """Yield (name, ratio, result) for every press, from one read per attention implementation."""
    from transformers import DynamicCache

    ids = torch.tensor([instance["ids"]])
    split = instance["split"][mode]
    groups = {"sdpa": [p for p in presses if not needs_eager(p[0])], "eager": [p for p in presses if needs_eager(p[0])]}
    for implementation, group in groups.items():
        if not group:
            continue
        model.set_attn_implementation(implementation)
        built = {(name, ratio): make_press(name, ratio) for name, ratio in group}
        compressed: dict[tuple[str, float], dict[int, tuple]] = {key: {} for key in built}
        full_keys: dict[int, torch.Tensor] = {}

        hook = compressing_hook(built, compressed, full_keys)

        language_model = model.model
        for press in built.values():
            if press is not None:
                press.post_init_from_model(model)
        handles = []
        for layer in language_model.layers:
            layer.self_attn.rotary_emb = language_model.rotary_emb
            handles.append(layer.self_attn.register_forward_hook(hook, with_kwargs=True))
        try:
            began = time.perf_counter()
            model.model(input_ids=ids[:, :split], past_key_values=DynamicCache())
            read_seconds = time.perf_counter() - began
        finally:
            for handle in handles:
                handle.remove()
        model.set_attn_implementation("sdpa")
        for (name, ratio), layers in compressed.items():
            cache = DynamicCache()
            for layer in sorted(layers):
                cache.update(layers[layer][0], layers[layer][1], layer)
            kv_bytes = physical_bytes(cache)
            positions = (
                [kept_positions(full_keys[layer], layers[layer][0]) for layer in sorted(layers)] if record else None
            )
            try:
                result = decode(model, tokenizer, cache, ids[:, split:], split, instance)
            except RuntimeError as exc:  # e.g. PyramidKV's per-layer lengths with a multi-token question
                yield (
                    name,
                    ratio,
                    {
                        "error": f"RuntimeError: {str(exc).splitlines()[0]}",
                        "first_logits": None,
                        "compressed_kv_bytes": kv_bytes,
                        "kept_positions": positions,
                    },
                )
                continue
            yield (
                name,
                ratio,
                {
                    **result,
                    "compressed_kv_bytes": kv_bytes,
                    "shared_read_seconds": read_seconds,
                    "kept_positions": positions,
                },
            )


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    torch.set_num_threads(int(job.get("threads") or os.cpu_count() or 1))
    import kvpress
    import transformers
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    model = load(job)
    tokenizer = None
    if job.get("tokenizer_dir"):
        tokenizer = AutoTokenizer.from_pretrained(
            job["tokenizer_dir"], **({"gguf_file": job["gguf_file"]} if job.get("gguf_file") else {})
        )
        tokenizer.chat_template = None
    out = Path(job["out"])
    done = set()
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            done.add((row["id"], row["press"], row["ratio"], row["mode"]))
    presses = [(name, float(ratio)) for name, ratio in job["presses"]]
    versions = {
        "kvpress": kvpress.__version__ if hasattr(kvpress, "__version__") else "?",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    with out.open("a") as handle:
        for instance in (json.loads(line) for line in Path(job["instances"]).read_text().splitlines() if line):
            if tokenizer is not None and instance.get("prompt") is not None:
                ids = tokenizer(instance["prompt"], add_special_tokens=True)["input_ids"]
                instance["tokenizer_agrees"] = ids == instance["ids"]
            for mode in job["modes"]:
                todo = [p for p in presses if (instance["id"], p[0], p[1], mode) not in done]
                if not todo:
                    continue
                with torch.inference_mode():
                    if job["strategy"] == "timed":
                        results = ((n, r, run_timed(model, tokenizer, instance, n, r, mode)) for n, r in todo)
                    else:
                        results = run_shared(model, tokenizer, instance, todo, mode, job.get("record_positions"))
                    for name, ratio, result in results:
                        first = result.pop("first_logits")
                        row = {
                            "id": instance["id"],
                            "press": name,
                            "ratio": ratio,
                            "mode": mode,
                            "strategy": job["strategy"],
                            "tokenizer_agrees": instance.get("tokenizer_agrees"),
                            "versions": versions,
                            **result,
                        }
                        if job.get("record_positions") and first is not None:
                            row["first_logits"] = first.tolist()
                        handle.write(json.dumps(row) + "\n")
                        handle.flush()


if __name__ == "__main__":
    main()
