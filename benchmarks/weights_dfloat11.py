"""Benchmark DFloat11 weight compression (issue 7) on SmolLM2-135M and Gemma-3-270M, cast to bfloat16.

For each model it measures, in one process and interleaved so machine load hits both sides alike:
- size: the .df11 file / the bfloat16 bytes of every stored tensor (tied weights once; target <= 0.70);
- entropy gap: coded exponent bits / the empirical exponent entropy (per tensor, the bound for any
  per-tensor code; also the model-wide entropy) - 1 (target within 1%), and the cost of the 12-bit cap;
- decode throughput: GB/s of bfloat16 output for all coded tensors, next to ``numpy.copyto`` and
  ``torch.clone`` of the same number of bytes (ratio reported), plus a full read (checksums, raw tensors);
- compression time (encode + write) and load time of the compressed folder vs the GGUF;
- bit-exactness: all tensors, and the logits of 10 prompts (compressed vs bfloat16 model).
Then, when ``--dfloat11-python`` names an interpreter with the ``dfloat11`` package, it runs that package's
own encoder (benchmarks/dfloat11_reference.py) on the same weights, grouped as DFloat11 groups them (the
linear weights of one transformer block; the embedding), and decodes its output with a CPU port of its
lookup-table walk to check exactness. Medians of ``--repeats`` runs. Writes benchmarks/results/weights_dfloat11.json.

    .venv/bin/python benchmarks/weights_dfloat11.py [--models smollm2-135m,gemma3-270m] [--repeats 5]
        [--dfloat11-python /tmp/df11venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numba
import numpy as np
import torch

from longreach.models import load_model
from longreach.results.provenance import current as environment
from longreach.weights import codec, huffman
from longreach.weights.fileformat import CompressedFile
from longreach.weights.model import WEIGHTS_FILE, model_tensors, stored_bytes, write_compressed

RESULTS = Path(__file__).parent / "results" / "weights_dfloat11.json"
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Lossless compression of neural network weights works because",
    "Once upon a time, in a small village by the sea, there lived",
    "The pass key is 71432. Remember it. The pass key is",
    "1, 1, 2, 3, 5, 8, 13, 21,",
    "Translate to German: The weather is nice today.",
    "Photosynthesis converts light energy into",
    "SELECT name, COUNT(*) FROM orders GROUP BY",
    "In 1969, the Apollo 11 mission",
]


def bf16_bits(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().reshape(-1).view(torch.int16).numpy().view(np.uint16)


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def entropy_report(tensors: dict[str, torch.Tensor], coded: dict[str, codec.EncodedTensor]) -> dict[str, Any]:
    """Coded exponent bits against the per-tensor and model-wide empirical entropies, and the 12-bit cap's cost."""
    per_tensor = 0.0
    unconstrained = 0
    overall = np.zeros(256, np.int64)
    for name in coded:
        exponents, _ = codec.split(bf16_bits(tensors[name]))
        counts = np.bincount(exponents, minlength=256)
        overall += counts
        per_tensor += huffman.entropy_bits(counts)
        unconstrained += int((huffman.code_lengths(counts, huffman.MAX_CODE_LENGTH).astype(np.int64) * counts).sum())
    weights = int(overall.sum())
    bits = sum(encoded.total_bits for encoded in coded.values())
    offsets = sum(encoded.offsets.nbytes * 8 for encoded in coded.values())
    return {
        "coded_weights": weights,
        "distinct_exponents": int((overall > 0).sum()),
        "exponent_bits_per_weight": bits / weights,
        "entropy_per_tensor_bits_per_weight": per_tensor / weights,
        "entropy_model_wide_bits_per_weight": huffman.entropy_bits(overall) / weights,
        "gap_to_per_tensor_entropy": bits / per_tensor - 1,
        "gap_to_model_wide_entropy": bits / huffman.entropy_bits(overall) - 1,
        "gap_with_block_offsets_to_per_tensor_entropy": (bits + offsets) / per_tensor - 1,
        "cost_of_12_bit_cap_vs_20_bit": bits / unconstrained - 1,
        "ideal_ratio_8_bits_plus_entropy": (8 + per_tensor / weights) / 16,
    }


def throughput(path: Path, coded: dict[str, codec.EncodedTensor], repeats: int) -> dict[str, Any]:
    """Decode all coded tensors (default threads and one thread), copies of the same bytes, a full read."""
    out_bytes = 2 * sum(encoded.numel for encoded in coded.values())
    source = np.random.default_rng(0).integers(0, 2**16, out_bytes // 2, dtype=np.uint16)
    target = np.empty_like(source)
    as_tensor = torch.from_numpy(source.view(np.int16)).view(torch.bfloat16)
    sides: dict[str, list[float]] = {"decode": [], "decode_1_thread": [], "copyto": [], "clone": [], "read": []}
    actions = {
        "decode": lambda: [codec.decode(encoded) for encoded in coded.values()],
        "decode_1_thread": lambda: [codec.decode(encoded, threads=1) for encoded in coded.values()],
        "copyto": lambda: np.copyto(target, source),
        "clone": lambda: as_tensor.clone(),
        "read": lambda: CompressedFile(path).tensors(),
    }
    for _ in range(repeats):
        for side, action in actions.items():
            sides[side] += timed(action, 1)
    seconds = {side: median(times) for side, times in sides.items()}
    gbps = {side: out_bytes / value / 1e9 for side, value in seconds.items()}
    return {
        "bf16_output_bytes": out_bytes,
        "median_seconds": seconds,
        "all_seconds": sides,
        "gb_per_s": gbps,
        "decode_over_copyto": gbps["decode"] / gbps["copyto"],
        "decode_over_clone": gbps["decode"] / gbps["clone"],
        "numba_threads": numba.get_num_threads(),
        "torch_threads": torch.get_num_threads(),
    }


def logits_check(reference: Any, restored: Any) -> dict[str, Any]:
    identical = 0
    max_diff = 0.0
    tokens = 0
    for prompt in PROMPTS:
        ids = reference.tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            expected, actual = reference.model(ids).logits, restored.model(ids).logits
        identical += int(torch.equal(expected.view(torch.int16), actual.view(torch.int16)))
        max_diff = max(max_diff, float((expected.float() - actual.float()).abs().max()))
        tokens += ids.shape[1]
    return {"prompts": len(PROMPTS), "bit_identical": identical, "max_abs_diff": max_diff, "prompt_tokens": tokens}


def dfloat11_groups(model: torch.nn.Module) -> tuple[dict[str, list[torch.Tensor]], list[str]]:
    """DFloat11's grouping: the Linear weights of each decoder layer, and the embedding (tied head once)."""
    groups: dict[str, list[torch.Tensor]] = {}
    names: list[str] = []
    for name, module in model.named_modules():
        if re.fullmatch(r"model\.layers\.\d+", name):
            linears = [
                (f"{name}.{sub}.weight", m) for sub, m in module.named_modules() if isinstance(m, torch.nn.Linear)
            ]
            groups[name] = [m.weight.detach() for _, m in linears]
            names += [full for full, _ in linears]
        elif name == "model.embed_tokens":
            groups[name] = [module.weight.detach()]
            names.append(f"{name}.weight")
    return groups, names


def measure_model(name: str, workdir: Path, repeats: int) -> tuple[dict[str, Any], Any]:
    start = time.perf_counter()
    loaded = load_model(name, "bf16")
    gguf_load = time.perf_counter() - start
    tensors, _ = model_tensors(loaded.model)
    compress_seconds = []
    for index in range(3):
        out = workdir / f"{name}-{index}"
        summary = write_compressed(loaded, out)
        compress_seconds.append(summary.seconds)
        if index < 2:
            shutil.rmtree(out)
    path = out / WEIGHTS_FILE
    file = CompressedFile(path)
    coded = {n: file.encoded(n) for n in file.names if file.header[n].get("codec") == "df11"}
    decoded = file.tensors()
    exact_tensors = sum(
        torch.equal(decoded[n].reshape(-1).view(torch.uint8), t.contiguous().reshape(-1).view(torch.uint8))
        for n, t in tensors.items()
    )
    start = time.perf_counter()
    restored = load_model(str(out))
    compressed_load = time.perf_counter() - start
    sizes = {
        "bf16_bytes": summary.bf16_bytes,
        "file_bytes": summary.file_bytes,
        "ratio": summary.ratio,
        "exponent_stream_bytes": sum(e.stream.nbytes for e in coded.values()),
        "block_offset_bytes": sum(e.offsets.nbytes for e in coded.values()),
        "sign_mantissa_bytes": sum(e.sign_mantissa.nbytes for e in coded.values()),
        "other_bytes": summary.file_bytes - sum(e.nbytes for e in coded.values()),
        "tensors": summary.tensors,
        "coded_tensors": summary.coded_tensors,
    }
    result = {
        "model": name,
        "source": loaded.source,
        "sizes": sizes,
        "entropy": entropy_report(tensors, coded),
        "throughput": throughput(path, coded, repeats),
        "compression_seconds": {"median": median(compress_seconds), "all": compress_seconds},
        "load_seconds": {"from_gguf": gguf_load, "from_df11": compressed_load},
        "bit_exact_tensors": {"identical": exact_tensors, "of": len(tensors)},
        "logits": logits_check(loaded, restored),
    }
    return result, loaded


@numba.njit(cache=True)
def _walk_dfloat11_luts(luts: np.ndarray, encoded: np.ndarray, n: int, exponents: np.ndarray) -> int:
    """Sequential CPU port of DFloat11's LUT walk; returns the number of exponents decoded before a bad code.

    luts: uint8[k + 1, 256]: k byte tables (table 0 for the first byte; an entry >= 256 - (k - 1) points to
    table ``256 - entry`` for the next byte, any other entry is the symbol) and the code lengths last.
    """
    tables = luts.shape[0] - 1
    lowest_pointer = 256 - (tables - 1)
    bit = 0
    for i in range(n):
        window = 0
        for k in range(5):
            index = (bit >> 3) + k
            window = (window << 8) | (np.int64(encoded[index]) if index < encoded.size else 0)
        window = (window >> (8 - (bit & 7))) & 0xFFFFFFFF
        table = 0
        symbol = -1
        for level in range(4):
            entry = np.int64(luts[table, (window >> (24 - 8 * level)) & 0xFF])
            if tables > 1 and entry >= lowest_pointer:
                table = 256 - entry
            else:
                symbol = entry
                break
        if symbol < 0 or luts[tables, symbol] == 0:
            return i
        exponents[i] = symbol
        bit += luts[tables, symbol]
    return n


def compare_dfloat11_package(
    loaded: Any, result: dict[str, Any], python: str, workdir: Path, our_file: Path
) -> dict[str, Any]:
    """Run the dfloat11 package's encoder on DFloat11's groups; sizes and exactness next to ours."""
    groups, grouped_names = dfloat11_groups(loaded.model)
    groups_file, out_file = workdir / "groups.pt", workdir / "dfloat11_out.npz"
    torch.save(groups, groups_file)
    start = time.perf_counter()
    script = Path(__file__).parent / "dfloat11_reference.py"
    run = subprocess.run([python, str(script), str(groups_file), str(out_file)], capture_output=True, text=True)
    if run.returncode != 0:
        return {"ran": False, "why": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "no output"}
    seconds = time.perf_counter() - start
    arrays = np.load(out_file)
    group_bytes = 0
    exponent_bytes = 0
    stream_bytes = 0
    exact = 0
    ambiguous = 0
    max_length = 0
    for group, weights in groups.items():
        parts = {key: arrays[f"{group}/{key}"] for key in ("luts", "encoded_exponent", "sign_mantissa")}
        parts |= {key: arrays[f"{group}/{key}"] for key in ("output_positions", "gaps", "split_positions")}
        group_bytes += sum(part.nbytes for part in parts.values())
        exponent_bytes += sum(parts[k].nbytes for k in ("encoded_exponent", "output_positions", "gaps"))
        stream_bytes += parts["encoded_exponent"].nbytes
        max_length = max(max_length, int(arrays[f"{group}/max_code_length"]))
        original = np.concatenate([bf16_bits(w) for w in weights])
        exponents = np.zeros(original.size, np.uint8)
        luts = parts["luts"]
        used = np.flatnonzero(luts[-1])
        ambiguous += int(luts.shape[0] > 2 and used.max() >= 256 - (luts.shape[0] - 2))
        done = _walk_dfloat11_luts(luts, parts["encoded_exponent"], original.size, exponents)
        sm = parts["sign_mantissa"].astype(np.uint16)
        rebuilt = ((sm & 0x80) << 8) | (exponents.astype(np.uint16) << 7) | (sm & 0x7F)
        exact += int(done == original.size and np.array_equal(rebuilt, original))
    tensors, _ = model_tensors(loaded.model)
    grouped_storages = {loaded.model.get_parameter(n).untyped_storage().data_ptr() for n in grouped_names}
    rest = {n: t for n, t in tensors.items() if t.untyped_storage().data_ptr() not in grouped_storages}
    total = group_bytes + stored_bytes(rest)
    ours = CompressedFile(our_file)
    ours_grouped = [ours.encoded(n) for n in grouped_names]
    grouped_weights = sum(e.numel for e in ours_grouped)
    return {
        "ran": True,
        "package": "dfloat11 0.5.0: its encoder module dfloat11_utils.py, loaded by path "
        "(`import dfloat11` imports pkg_resources and cupy and loads a CUDA kernel)",
        "seconds": seconds,
        "groups": len(groups),
        "groups_bit_exact": exact,
        "groups_with_ambiguous_lut_entries": ambiguous,
        "max_code_length": max_length,
        "model_bytes": total,
        "ratio": total / result["sizes"]["bf16_bytes"],
        "ours_ratio": result["sizes"]["ratio"],
        "grouped_weights": grouped_weights,
        "exponent_bits_per_weight_dfloat11": exponent_bytes * 8 / grouped_weights,
        "exponent_bits_per_weight_ours": sum(e.stream.nbytes + e.offsets.nbytes for e in ours_grouped)
        * 8
        / grouped_weights,
        "note": "exponent bits include each side's stream-position metadata (gaps + output positions; block offsets)",
        "stream_only_bits_per_weight_dfloat11": stream_bytes * 8 / grouped_weights,
        "stream_only_bits_per_weight_ours": sum(e.stream.nbytes for e in ours_grouped) * 8 / grouped_weights,
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| model | size / bf16 | exp bits/w | entropy/w | gap | decode GB/s | copyto GB/s | ratio | compress s | "
        "load s (gguf -> df11) | logits exact | dfloat11 pkg size / bf16, exact groups |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        ref = r.get("dfloat11_package", {})
        ref_cell = f"{ref['ratio']:.4f}, {ref['groups_bit_exact']}/{ref['groups']}" if ref.get("ran") else "not run"
        e, t = r["entropy"], r["throughput"]
        rows.append(
            f"| {name} | {r['sizes']['ratio']:.4f} | {e['exponent_bits_per_weight']:.4f} | "
            f"{e['entropy_per_tensor_bits_per_weight']:.4f} | {100 * e['gap_to_per_tensor_entropy']:+.2f}% "
            f"({100 * e['gap_to_model_wide_entropy']:+.2f}% model-wide) | {t['gb_per_s']['decode']:.2f} | "
            f"{t['gb_per_s']['copyto']:.2f} | {t['decode_over_copyto']:.3f} | "
            f"{r['compression_seconds']['median']:.1f} | "
            f"{r['load_seconds']['from_gguf']:.1f} -> {r['load_seconds']['from_df11']:.1f} | "
            f"{r['logits']['bit_identical']}/{r['logits']['prompts']} | {ref_cell} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dfloat11-python", default=None, help="python of a venv with the dfloat11 package")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "weights_dfloat11",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "provenance": environment(),
        "settings": {"block_size": codec.DEFAULT_BLOCK_SIZE, "max_code_length": codec.DEFAULT_MAX_CODE_LENGTH},
        "models": {},
        "load_average_at_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="longreach-df11-") as scratch:
        for name in args.models.split(","):
            workdir = Path(scratch) / name
            workdir.mkdir()
            result, loaded = measure_model(name, workdir, args.repeats)
            if args.dfloat11_python:
                our_file = workdir / f"{name}-2" / WEIGHTS_FILE
                result["dfloat11_package"] = compare_dfloat11_package(
                    loaded, result, args.dfloat11_python, workdir, our_file
                )
            results["models"][name] = result
            print(json.dumps({name: {k: result[k] for k in ("sizes", "logits")}}), flush=True)
            del loaded
            shutil.rmtree(workdir)
    results["wall_seconds"] = time.perf_counter() - started
    results["load_average_at_end"] = os.getloadavg()  # other jobs share the 2 cores: timings are noisy
    results["table"] = table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(results["table"])
    print(f"wall time {results['wall_seconds']:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
