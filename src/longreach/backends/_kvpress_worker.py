"""The kvpress worker: NVIDIA kvpress 0.5.5's presses on the token ids longreach sends, in kvpress's own venv.

Run by :mod:`longreach.backends.kvpress` as ``<venv>/bin/python _kvpress_worker.py CONFIG`` (never imported: the
leading underscore keeps the backend registry from loading it). It imports only torch, transformers and kvpress,
never longreach (kvpress 0.5.5 needs transformers < 5.3). CONFIG is JSON: ``model_dir``, ``gguf_file`` (or null),
``tokenizer_dir`` (longreach's own tokenizer, saved, so stop strings are decoded as longreach decodes them),
``dtype`` (bf16 | fp32 | fp16), ``threads`` (0: every core).

Protocol: JSON lines. The worker loads the model (sdpa attention, on the CPU), prints one ready line
``{"ready": true, "versions": {...}, "threads": N}``, then answers each request line with one result line:

- ``{"op": "generate", "ids", "split", "press", "max_new_tokens", "stop"}`` -> text, new token ids, times (wall and
  this process's CPU seconds, for timing on a shared machine; the seconds spent in the press's ``compress``),
  peak RSS, cache bytes (see :func:`generate`);
- ``{"op": "inspect", "ids", "split", "press"}`` -> each layer's kept positions per KV head and the float32 logits
  of the first answer token (the oracle test's view; see :func:`inspect`).

``press`` is null or ``{"press": "SnapKVPress", "compression_ratio": 0.5}``. A request that raises (a press that
cannot read a multi-token question on PyramidKV's per-layer lengths, a kvpress assertion) is answered with
``{"error": "Type: message"}`` and the worker carries on; it exits when stdin closes.

How a prompt is read is kvpress's pipeline (``KVPressTextGenerationPipeline._forward``) on our ids: the first
``split`` tokens are read by ``model.model`` inside ``with press(model)`` (its forward hooks compress each layer as
it is read), then the rest at explicit positions from ``split`` on (the uncompressed length), then greedy decoding.
Unlike the pipeline, decoding also stops at the first stop string after some output (longreach's ``cut_at_stop``
rule), and a null ``split`` (no press, question-aware) reads the whole prompt at once, as longreach's engine does.

Shapes: ids (1, n); cached keys and values per layer (1, k, n_kept, d); logits (vocab,).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import torch

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
PRESSES = (
    "SnapKVPress",
    "StreamingLLMPress",
    "KnormPress",
    "ObservedAttentionPress",
    "PyramidKVPress",
    "ExpectedAttentionPress",
)
EAGER = ("ObservedAttentionPress",)  # scores read the attention weights, which only eager attention returns


def load(config: dict[str, Any]) -> tuple[Any, Any]:
    """(model, tokenizer): the model from its files (a GGUF is dequantized to ``dtype``) with sdpa attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": config["gguf_file"]} if config.get("gguf_file") else {}
    model = AutoModelForCausalLM.from_pretrained(
        config["model_dir"], dtype=DTYPES[config["dtype"]], attn_implementation="sdpa", **extra
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(config["tokenizer_dir"])
    return model, tokenizer


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids from the tokenizer and the model's generation config (as longreach's engine)."""
    found: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, (list, tuple)):
            found.update(v for v in value if isinstance(v, int))
    return found


def make_press(spec: dict[str, Any] | None) -> Any:
    """The kvpress press of a spec (``{"press": name, "compression_ratio": r}``), or None."""
    if spec is None:
        return None
    import kvpress

    if spec["press"] not in PRESSES:
        raise ValueError(f"unknown press {spec['press']!r}; valid: {', '.join(PRESSES)}")
    return getattr(kvpress, spec["press"])(compression_ratio=float(spec["compression_ratio"]))


def cache_bytes(cache: Any) -> int:
    """Physical bytes of the cache's tensors, each storage counted once (views share storage)."""
    seen: dict[int, int] = {}
    for layer in cache.layers:
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor):
                storage = value.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def reset_peak_rss() -> None:
    """Reset Linux's resident-set high-water mark of this process."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("VmHWM not found in /proc/self/status")


def cut_at_stop(text: str, stops: list[str]) -> str | None:
    """``text`` up to the first stop string that follows some non-blank output; None if none occurs."""
    start = len(text) - len(text.lstrip())
    cuts = [c for c in (text.find(stop, start) for stop in stops) if c > start]
    return text[: min(cuts)] if cuts else None


@contextlib.contextmanager
def attention(model: Any, press: Any) -> Iterator[None]:
    """Eager attention for the presses that read attention weights (kvpress requires it), sdpa otherwise."""
    eager = type(press).__name__ in EAGER
    if eager:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if eager:
            model.set_attn_implementation("sdpa")


@contextlib.contextmanager
def capturing_keys(model: Any, full: dict[int, torch.Tensor]) -> Iterator[None]:
    """Keep each layer's uncompressed keys (1, k, n, d). Registered before the press's hooks, so it runs first."""

    def hook(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        full[module.layer_idx] = kwargs["past_key_values"].layers[module.layer_idx].keys
        return output

    language_model = getattr(model.model, "language_model", model.model)  # where kvpress hooks (BasePress.__call__)
    handles = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in language_model.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def timed_compress(press: Any, spent: list[float]) -> None:
    """Add the seconds of every ``press.compress`` call (scoring and gathering, per layer) to ``spent[0]``."""
    compress = press.compress

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return compress(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - start

    press.compress = timed


def read(model: Any, ids: torch.Tensor, split: int | None, press: Any) -> tuple[torch.Tensor, Any, int]:
    """Read the prompt (kvpress's pipeline protocol): (first answer token's logits, cache, bytes once compressed)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    if split is None:
        logits = model(input_ids=ids, past_key_values=cache, logits_to_keep=1).logits
        return logits[0, -1], cache, cache_bytes(cache)
    with press(model) if press is not None else contextlib.nullcontext():
        model.model(input_ids=ids[:, :split], past_key_values=cache)
    compressed = cache_bytes(cache)
    positions = torch.arange(split, ids.shape[1]).unsqueeze(0)
    logits = model(input_ids=ids[:, split:], past_key_values=cache, position_ids=positions, logits_to_keep=1).logits
    return logits[0, -1], cache, compressed


def generate(model: Any, tokenizer: Any, eos: set[int], request: dict[str, Any]) -> dict[str, Any]:
    """Read the prompt under the press, then decode greedily until EOS, ``max_new_tokens`` or a stop string."""
    ids = torch.tensor([request["ids"]])
    press = make_press(request["press"])
    compress_seconds = [0.0]
    if press is not None:
        timed_compress(press, compress_seconds)
    reset_peak_rss()
    with attention(model, press):
        start, cpu_start = time.perf_counter(), time.process_time()
        logits, cache, compressed = read(model, ids, request["split"], press)
        prefill, prefill_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        kv_bytes = cache_bytes(cache)
        new_ids: list[int] = []
        text, steps, decode, decode_cpu = "", 0, 0.0, 0.0
        next_id = int(logits.argmax())
        while next_id not in eos:
            new_ids.append(next_id)
            text = tokenizer.decode(new_ids, skip_special_tokens=True)
            cut = cut_at_stop(text, request["stop"])
            if cut is not None:
                text = cut
                break
            if len(new_ids) >= request["max_new_tokens"]:
                break
            step, cpu_step = time.perf_counter(), time.process_time()
            position = torch.tensor([[ids.shape[1] + len(new_ids) - 1]])
            out = model(input_ids=torch.tensor([[next_id]]), past_key_values=cache, position_ids=position)
            next_id = int(out.logits[0, -1].argmax())
            decode += time.perf_counter() - step
            decode_cpu += time.process_time() - cpu_step
            steps += 1
        seconds = time.perf_counter() - start
    return {
        "text": text,
        "new_ids": new_ids,
        "seconds": seconds,
        "prefill_seconds": prefill,
        "decode_seconds": decode,
        "decode_steps": steps,
        "prefill_cpu_seconds": prefill_cpu,
        "compress_seconds": compress_seconds[0],
        "decode_cpu_seconds": decode_cpu,
        "peak_rss_mb": peak_rss_mb(),
        "kv_cache_bytes": max(kv_bytes, cache_bytes(cache)),
        "compressed_kv_bytes": compressed,
    }


def kept_positions(full: torch.Tensor, kept: torch.Tensor) -> list[list[int]]:
    """For each KV head, the sorted positions of the kept keys (1, k, m, d) among the full keys (1, k, n, d): the
    position whose key is bitwise the kept one (a press gathers keys, it never changes them); a kept key found
    nowhere (none should be) goes to its nearest full key."""
    found = []
    for head in range(full.shape[1]):
        rows = full[0, head].contiguous()
        where = {_bytes(row): position for position, row in enumerate(rows)}
        positions = []
        for row in kept[0, head]:
            position = where.get(_bytes(row))
            if position is None:
                position = int(torch.cdist(row[None].float(), rows.float()).argmin())
            positions.append(position)
        found.append(sorted(positions))
    return found


def _bytes(row: torch.Tensor) -> bytes:
    return row.contiguous().view(torch.uint8).numpy().tobytes()


def inspect(model: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Each layer's kept positions per KV head (None without a press) and the first answer token's float32 logits
    (None, with ``error``, when reading the rest of the prompt raises)."""
    from transformers import DynamicCache

    ids = torch.tensor([request["ids"]])
    split = int(request["split"])
    press = make_press(request["press"])
    full: dict[int, torch.Tensor] = {}
    cache = DynamicCache()
    with attention(model, press):
        with capturing_keys(model, full), press(model) if press is not None else contextlib.nullcontext():
            model.model(input_ids=ids[:, :split], past_key_values=cache)
        positions = None
        if press is not None:
            positions = [kept_positions(full[i], layer.keys) for i, layer in enumerate(cache.layers)]
        rest = torch.arange(split, ids.shape[1]).unsqueeze(0)
        try:
            out = model(input_ids=ids[:, split:], past_key_values=cache, position_ids=rest, logits_to_keep=1)
        except RuntimeError as exc:  # PyramidKV's per-layer lengths with a multi-token question (kvpress 0.5.5)
            return {"kept_positions": positions, "first_logits": None, "error": describe(exc)}
    return {"kept_positions": positions, "first_logits": out.logits[0, -1].float().tolist()}


def describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def serve(model: Any, tokenizer: Any, requests: TextIO, answers: TextIO) -> None:
    """Answer each request line with one result line until stdin closes."""
    eos = eos_ids(model, tokenizer)
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            with torch.inference_mode():
                if request["op"] == "generate":
                    answer = generate(model, tokenizer, eos, request)
                elif request["op"] == "inspect":
                    answer = inspect(model, request)
                else:
                    answer = {"error": f"unknown op {request['op']!r}; valid: generate, inspect"}
        except Exception as exc:  # noqa: BLE001 - any press failure fails this request only; the worker goes on
            answer = {"error": describe(exc)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    config = json.loads(sys.argv[1])
    answers = os.fdopen(os.dup(1), "w")  # the protocol's channel; stray prints (libraries) go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    torch.set_num_threads(int(config.get("threads") or os.cpu_count() or 1))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model, tokenizer = load(config)
    import kvpress  # noqa: F401 - here, so that its import (seconds) is not timed as the first request's prefill

    versions = {name: importlib.metadata.version(name) for name in ("kvpress", "transformers", "torch")}
    ready = {"ready": True, "versions": versions, "threads": torch.get_num_threads()}
    answers.write(json.dumps(ready) + "\n")
    answers.flush()
    serve(model, tokenizer, sys.stdin, answers)


if __name__ == "__main__":
    main()
