"""Engine speed against this machine's own limits (issue 18, part 4), on SmolLM2-135M-Instruct (Q4_1 GGUF
dequantized to bf16). Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/engine_speed``).

One run measures, in this order:
1. the machine: memcpy bandwidth (torch ``copy_`` of 512 MiB, bytes read + written) and read bandwidth (a sum over
   512 MiB); bf16 and fp32 matmul FLOP/s at the prefill's shapes (``linear`` of n x hidden by each weight) and the
   FLOP/s of the causal SDPA attention call the prefill makes (bf16, GQA);
2. decode tokens/s after a ``--decode-prompt``-token passkey prompt, ``--reps`` repetitions interleaved (the order
   rotates every repetition): longreach (``none``), longreach with each of its decode speedups left out in turn and
   with none of them (``speedups=()``: the loop before issue 18), longreach at one thread, llama.cpp
   (llama-cpp-python in process, the same GGUF, the same prompt ids, the same threads) and transformers' plain
   greedy ``generate``. longreach and llama.cpp continue a kept read of the prompt (only its last token is
   recomputed); transformers prefills every time and its steps are timed by a logits processor. Each rate is
   single-token steps / their seconds (the first answer token comes with the prefill). Then longreach with and
   without its preallocated cache after the ``--prefill-tokens`` prompt (where a grown cache copies the most), and
   the microseconds a token the answer's text costs (DecodeStream or re-decoding, 64- and 2048-token answers);
3. prefill seconds at ``--prefill-tokens`` (``--prefill-reps`` repetitions, interleaved) for longreach, llama.cpp
   and transformers (time to the first logits);
4. torch.profiler once on longreach's prefill and on 16 of its decode steps: the top ops and their share of time;
5. torch.compile for decode, as one more decode row of step 2: transformers' StaticCache with the model's forward
   compiled (the route that compiles here; a cache of growing views does not), its warm-up reported apart.

Limits and formulas (the report repeats them):
- weights read per decode token: every linear weight including the head (tied to the embedding: the whole table),
  the norms and one embedding row; memory bound = bandwidth / those bytes (the KV cache read is reported apart);
- prefill FLOPs of n tokens: 2 n P_lin (P_lin: the decoder layers' linear weights) + 2 V D (the head, last token)
  + 2 L H d n (n + 1) (causal attention: query i reads i + 1 keys; QK^T and PV are 2 d FLOPs a pair each);
  elementwise work (norms, RoPE, softmax, SiLU) is not counted.
Run it alone: ``flock /tmp/longreach-bench.lock env OMP_NUM_THREADS=2 PYTHONPATH=src python
benchmarks/engine_speed.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import median_ci, write_outputs

from longreach.engine import SPEEDUPS, Engine
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.models import load_model, resolve
from longreach.results.provenance import current
from longreach.tasks import parse_task

ROOT = Path(__file__).resolve().parents[1]
MODEL_NOTE = "SmolLM2-135M-Instruct (Q4_1 GGUF dequantized to bf16)"
NONE = parse_stack("none")
BEFORE = "longreach speedups=() (before issue 18)"
COMPILED = "transformers StaticCache + torch.compile"


def timed(call: Callable[[], object], reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def bandwidth_seconds(size: int) -> tuple[float, float]:
    """Median seconds to copy ``size`` bytes into another tensor, and to sum ``size`` bytes of floats."""
    source = torch.ones(size, dtype=torch.uint8)
    target = torch.empty_like(source)
    floats = torch.ones(size // 4, dtype=torch.float32)
    return statistics.median(timed(lambda: target.copy_(source), 10)), statistics.median(timed(floats.sum, 10))


def machine_limits(n: int, hidden: int, intermediate: int, kv_width: int, heads: int, kv_heads: int) -> dict:
    """Bandwidths (GB/s) and FLOP/s (GFLOP/s) measured now, with this process's threads."""
    copy_s, read_s = bandwidth_seconds(512 * 2**20)
    shapes = {"q/o": (hidden, hidden), "k/v": (kv_width, hidden), "gate/up": (intermediate, hidden),
              "down": (hidden, intermediate)}  # fmt: skip
    matmul = {}
    for dtype in (torch.bfloat16, torch.float32):
        for name, (out_features, in_features) in shapes.items():
            x, w = torch.randn(n, in_features).to(dtype), torch.randn(out_features, in_features).to(dtype)
            seconds = min(timed(lambda x=x, w=w: torch.nn.functional.linear(x, w), 5))
            matmul[f"{str(dtype).removeprefix('torch.')} {name}"] = 2 * n * in_features * out_features / seconds / 1e9
    q = torch.randn(1, heads, n, hidden // heads).to(torch.bfloat16)
    k, v = (torch.randn(1, kv_heads, n, hidden // heads).to(torch.bfloat16) for _ in range(2))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    attention_s = min(timed(lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True), 2))
    attention = 2 * heads * (hidden // heads) * n * (n + 1) / attention_s / 1e9
    bf16 = [value for key, value in matmul.items() if key.startswith("bfloat16")]
    return {
        "memcpy_gb_s": 2 * 512 * 2**20 / copy_s / 1e9,
        "read_gb_s": 512 * 2**20 / read_s / 1e9,
        "matmul_gflop_s": matmul,
        "bf16_matmul_peak_gflop_s": max(bf16),
        "attention_bf16_causal_gflop_s": attention,
        "at_tokens": n,
    }


def model_facts(model: torch.nn.Module, n_prefill: int, n_decode: int) -> dict:
    config = model.config
    layers = model.model.layers
    linear = sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))
    head = model.get_output_embeddings().weight
    element = head.element_size()
    norms = sum(p.numel() for name, p in model.named_parameters() if "norm" in name)
    weight_bytes = (linear + head.numel() + norms + config.hidden_size) * element  # + one embedding row
    heads, head_dim = config.num_attention_heads, config.head_dim
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element

    def flops(n: int) -> float:
        return 2 * n * linear + 2 * head.numel() + 2 * config.num_hidden_layers * heads * head_dim * n * (n + 1)

    return {
        "decoder_linear_params": linear,
        "weight_bytes_per_token": weight_bytes,
        "kv_bytes_per_token": kv_per_token,
        "kv_bytes_read_at_decode": kv_per_token * n_decode,
        "prefill_flops": flops(n_prefill),
        "prefill_tokens": n_prefill,
    }


class Stamps:
    """A logits processor recording when each step's logits arrive (transformers generate's timing)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


def hf_generate(model: torch.nn.Module, ids: list[int], new: int) -> tuple[float, float, list[int]]:
    """(seconds to the first logits, decode tokens/s, tokens) of transformers' greedy generate."""
    from transformers import LogitsProcessorList

    stamps = Stamps()
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             logits_processor=LogitsProcessorList([stamps]))  # fmt: skip
    steps = len(stamps.times) - 1
    rate = steps / (stamps.times[-1] - stamps.times[0]) if steps else float("nan")
    return stamps.times[0] - start, rate, out[0, len(ids) :].tolist()


class LlamaCpp:
    """llama-cpp-python in process: greedy over the last logits, prefill by its own batching (n_batch 512)."""

    def __init__(self, path: str, threads: int, n_ctx: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   verbose=False)  # fmt: skip
        self.vocab = self.llm.n_vocab()

    def _next(self) -> int:
        import numpy as np

        return int(np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.vocab,)).argmax())

    def prefill(self, ids: list[int]) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        self._next()
        return time.perf_counter() - start

    def decode(self, ids: list[int], new: int) -> tuple[float, list[int]]:
        """Continue the kept read of ``ids`` (recompute its last token), then ``new`` - 1 single-token steps."""
        if self.llm.n_tokens < len(ids) - 1 or list(self.llm.input_ids[: len(ids) - 1]) != ids[:-1]:
            self.llm.reset()
        self.llm.n_tokens = min(self.llm.n_tokens, len(ids) - 1)
        self.llm.eval(ids[self.llm.n_tokens :])
        tokens = [self._next()]
        start = time.perf_counter()
        for _ in range(new - 1):
            self.llm.eval(tokens[-1:])
            tokens.append(self._next())
        return (new - 1) / (time.perf_counter() - start), tokens


def profile_top(call: Callable[[], object], rows: int = 12) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    events.sort(key=lambda e: -e.self_cpu_time_total)
    top = [{"op": e.key, "share": e.self_cpu_time_total / 1e6 / wall, "self_s": e.self_cpu_time_total / 1e6,
            "calls": e.count} for e in events[:rows]]  # fmt: skip
    inside = sum(e.self_cpu_time_total for e in events) / 1e6
    return top + [{"op": "(outside torch ops: Python, transformers' bookkeeping)", "share": 1 - inside / wall,
                   "self_s": wall - inside, "calls": 0}]  # fmt: skip


class CompiledDecode:
    """transformers' StaticCache with the model's forward compiled (inductor) for the single-token steps, after an
    eager prefill of the prompt made once; every call rewinds the cache to the prompt and decodes again. The first
    call compiles (its first step's seconds are the warm-up)."""

    def __init__(self, model: torch.nn.Module, ids: list[int], new: int) -> None:
        from transformers import StaticCache

        self.model, self.length, self.new = model, len(ids), new
        self.cache = StaticCache(config=model.config, max_cache_len=len(ids) + new)
        self.compiled = torch.compile(model.forward)
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([ids]), cache=self.cache, use_cache=True, logits_to_keep=1)
        self.first = int(out.logits[0, -1].argmax())
        self.warmup_s: float | None = None

    def __call__(self) -> tuple[float, list[int]]:
        self.cache.crop(-(int(self.cache.get_seq_length()) - self.length))  # back to the prompt
        tokens, timed_steps, start = [self.first], self.new - 1, time.perf_counter()
        with torch.inference_mode():
            for step in range(self.new - 1):
                position = torch.tensor([[self.length + step]])
                out = self.compiled(input_ids=torch.tensor([tokens[-1:]]), position_ids=position, cache=self.cache,
                                    use_cache=True, logits_to_keep=1)  # fmt: skip
                tokens.append(int(out.logits[0, -1].argmax()))
                if self.warmup_s is None:  # the compiling step is not a decode step's time
                    self.warmup_s, timed_steps = time.perf_counter() - start, timed_steps - 1
                    start = time.perf_counter()
        return timed_steps / (time.perf_counter() - start), tokens


def without(left_out: str) -> list[str]:
    return [name for name in SPEEDUPS if name != left_out]


def interleaved(decoders: dict[str, Callable[[], tuple[float, str]]], reps: int) -> tuple[dict, dict]:
    """Each decoder ``reps`` + 1 times, the order rotating every repetition; repetition 0 warms every one up (and
    fills the kept reads) and is not counted. Returns (rates with intervals, the last answer of each)."""
    rates: dict[str, list[float]] = {name: [] for name in decoders}
    answers: dict[str, str] = {}
    for rep in range(reps + 1):
        names = list(decoders)
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            rate, answers[name] = decoders[name]()
            if rep:
                rates[name].append(rate)
        print(f"decode rep {rep}: " + ", ".join(f"{n} {r[-1]:.1f}" for n, r in rates.items() if r), flush=True)
    return {name: median_ci(values) for name, values in rates.items()}, answers


def answer_text_costs(tokenizer: object, answer: str) -> dict:
    """Microseconds a token spent on the answer's text (stop checks), streamed and re-decoded, for answers of 64 and
    2048 tokens (the decode answer's ids repeated); no model runs."""
    from longreach.engine.text import AnswerText

    base = tokenizer(answer, add_special_tokens=False)["input_ids"] or [0]
    costs = {}
    for length in (64, 2048):
        ids = (base * (length // len(base) + 1))[:length]
        for incremental in (True, False):
            text = AnswerText(tokenizer, ("\n\n\n\n\n",), incremental=incremental)
            start = time.perf_counter()
            for token in ids:
                text.add(token)
            name = f"{'DecodeStream' if incremental else 're-decode'}, {length} tokens"
            costs[name] = 1e6 * (time.perf_counter() - start) / length
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decode-prompt", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--prefill-tokens", type=int, default=8192)
    parser.add_argument("--prefill-reps", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "engine_speed")
    args = parser.parse_args()
    started, load_before = time.perf_counter(), os.getloadavg()
    threads = torch.get_num_threads()
    loaded = load_model("smollm2-135m", "bf16")
    model, tokenizer = loaded.model, loaded.tokenizer
    config = model.config
    task = parse_task("passkey").task
    short = task.generate(tokenizer, args.decode_prompt, 0.5, seed=0, index=0).prompt
    long = task.generate(tokenizer, args.prefill_tokens, 0.5, seed=0, index=1).prompt
    fast = Engine(loaded, reuse_prefix=True)
    short_ids, long_ids = fast.encode(short), fast.encode(long)
    results: dict = {"model": MODEL_NOTE, "args": {k: str(v) for k, v in vars(args).items()}, "threads": threads}
    results["facts"] = model_facts(model, len(long_ids), len(short_ids))
    kv_width = config.num_key_value_heads * config.head_dim
    results["limits"] = machine_limits(len(long_ids), config.hidden_size, config.intermediate_size, kv_width,
                                       config.num_attention_heads, config.num_key_value_heads)  # fmt: skip
    print(json.dumps(results["limits"], indent=1), flush=True)
    llama = LlamaCpp(str(resolve("smollm2-135m").path), threads, args.prefill_tokens + args.new_tokens + 64)

    def ours(engine: Engine, n_threads: int, prompt: str = short) -> Callable[[], tuple[float, str]]:
        def run() -> tuple[float, str]:
            torch.set_num_threads(n_threads)
            try:
                g = engine.generate(Request(prompt, args.new_tokens), NONE)
            finally:
                torch.set_num_threads(threads)
            return g.decode_steps / g.decode_seconds, g.text

        return run

    def text(rate_and_ids: tuple[float, list[int]]) -> tuple[float, str]:
        return rate_and_ids[0], tokenizer.decode(rate_and_ids[1], skip_special_tokens=True)

    decoders: dict[str, Callable[[], tuple[float, str]]] = {"longreach": ours(fast, threads)}
    for left_out in SPEEDUPS:
        decoders[f"longreach without {left_out}"] = ours(Engine(loaded, True, without(left_out)), threads)
    decoders |= {
        BEFORE: ours(Engine(loaded, True, speedups=()), threads),
        "longreach, 1 thread": ours(Engine(loaded, True), 1),
        "llama.cpp": lambda: text(llama.decode(short_ids, args.new_tokens)),
        "transformers generate": lambda: text(hf_generate(model, short_ids, args.new_tokens)[1:]),
    }
    compiled = None if args.no_compile else CompiledDecode(model, short_ids, args.new_tokens)
    if compiled is not None:
        decoders[COMPILED] = lambda: text(compiled())
    results["decode"], results["decode_texts"] = interleaved(decoders, args.reps)
    at_long = {"longreach": ours(Engine(loaded, True), threads, long)}
    at_long["longreach without preallocated_cache"] = ours(
        Engine(loaded, True, without("preallocated_cache")), threads, long
    )
    results["decode_long"], results["decode_long_texts"] = interleaved(at_long, args.reps)
    results["answer_text"] = answer_text_costs(tokenizer, results["decode_texts"]["longreach"])
    prefill_runs: dict[str, Callable[[], float]] = {
        "longreach": lambda: Engine(loaded).generate(Request(long, 1), NONE).prefill_seconds,
        "llama.cpp": lambda: llama.prefill(long_ids),
        "transformers generate": lambda: hf_generate(model, long_ids, 1)[0],
    }
    seconds: dict[str, list[float]] = {name: [] for name in prefill_runs}
    for rep in range(args.prefill_reps):
        names = list(prefill_runs)
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            seconds[name].append(prefill_runs[name]())
        print(f"prefill rep {rep}: " + ", ".join(f"{n} {s[-1]:.2f}" for n, s in seconds.items()), flush=True)
    results["prefill"] = {name: median_ci(values) for name, values in seconds.items()}
    with torch.inference_mode():
        results["profile_prefill"] = profile_top(lambda: Engine(loaded).generate(Request(long, 1), NONE))
        results["profile_decode"] = profile_top(lambda: fast.generate(Request(short, 17), NONE))
    if compiled is not None:
        results["compile_warmup_s"] = compiled.warmup_s
    results["wall_s"] = time.perf_counter() - started
    results["load_average"] = {"start": load_before, "end": os.getloadavg()}  # (1, 5, 15 min): other processes
    results["provenance"] = provenance()
    write_outputs(args.out, results, render(results))
    print(render(results))


def provenance() -> dict:
    import llama_cpp
    import tokenizers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    simd = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
    return {**current(), "cpu_model": cpu, "cpu_simd_flags": simd, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "llama_cpp": llama_cpp.__version__, "tokenizers": tokenizers.__version__,
            "python": platform.python_version()}  # fmt: skip


def _ci(value: dict, digits: int = 1, scale: float = 1.0) -> str:
    v, lo, hi = (value[k] * scale for k in ("median", "low", "high"))
    return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def render(results: dict) -> str:
    limits, facts = results["limits"], results["facts"]
    bandwidth = max(limits["memcpy_gb_s"], limits["read_gb_s"])  # the stricter bound
    weights_gb = facts["weight_bytes_per_token"] / 1e9
    bound = bandwidth / weights_gb
    bound_kv = bandwidth / (weights_gb + facts["kv_bytes_read_at_decode"] / 1e9)
    peak = limits["bf16_matmul_peak_gflop_s"]
    prefill_gflop = facts["prefill_flops"] / 1e9
    lines = [f"# Engine speed against the machine's limits: {results['model']}", ""]
    lines += ["## Machine limits (measured in this run)", "",
              f"- memcpy {limits['memcpy_gb_s']:.1f} GB/s (bytes read + written), read {limits['read_gb_s']:.1f} GB/s; "
              f"bound used: {bandwidth:.1f} GB/s (the higher)",
              f"- bf16 matmul peak {peak:.0f} GFLOP/s at {limits['at_tokens']} rows (best prefill shape); "
              + ", ".join(f"{k} {v:.0f}" for k, v in limits["matmul_gflop_s"].items()),
              f"- SDPA causal attention (bf16, GQA, one layer at {limits['at_tokens']}): "
              f"{limits['attention_bf16_causal_gflop_s']:.0f} GFLOP/s", "",
              f"Weights read per token {weights_gb * 1e3:.0f} MB -> memory bound {bound:.1f} tok/s "
              f"({bound_kv:.1f} tok/s counting the {facts['kv_bytes_read_at_decode'] / 1e6:.0f} MB of KV read "
              f"at the decode prompt). Prefill of {facts['prefill_tokens']} tokens: {prefill_gflop:.0f} GFLOP.",
              ""]  # fmt: skip
    lines += [f"## Decode after a {results['args']['decode_prompt']}-token prompt ({results['threads']} threads, "
              "median [95% CI] over the repetitions)", "",
              "| engine | tok/s | fraction of memory bound | vs llama.cpp |", "|---|---|---|---|"]  # fmt: skip
    llama = results["decode"]["llama.cpp"]["median"]
    for name, value in results["decode"].items():
        lines.append(f"| {name} | {_ci(value)} | {value['median'] / bound:.2f} | {value['median'] / llama:.2f} |")
    if "decode_long" in results:
        lines += ["", f"At the {facts['prefill_tokens']}-token prompt (KV read "
                  f"{facts['kv_bytes_per_token'] * facts['prefill_tokens'] / 1e6:.0f} MB a token):", "",
                  "| engine | tok/s | fraction of memory bound |", "|---|---|---|"]  # fmt: skip
        for name, value in results["decode_long"].items():
            lines.append(f"| {name} | {_ci(value)} | {value['median'] / bound:.2f} |")
        costs = ", ".join(f"{name} {us:.0f} us" for name, us in results["answer_text"].items())
        lines += ["", f"Answer text (stop checks) a token: {costs}."]
    reference = results["decode_texts"][BEFORE]
    same = ", ".join(f"{name}: {text == reference}" for name, text in results["decode_texts"].items())
    lines += ["", f"Same answer text as the loop before issue 18 ({len(reference)} characters): {same} "
              "(llama.cpp computes with the Q4_1 weights themselves)", ""]  # fmt: skip
    lines += [f"## Prefill of {facts['prefill_tokens']} tokens", "",
              "| engine | seconds | GFLOP/s | fraction of bf16 matmul peak | vs llama.cpp (time ratio) |",
              "|---|---|---|---|---|"]  # fmt: skip
    llama_s = results["prefill"]["llama.cpp"]["median"]
    for name, value in results["prefill"].items():
        rate = prefill_gflop / value["median"]
        lines.append(f"| {name} | {_ci(value, 2)} | {rate:.0f} | {rate / peak:.2f} | {value['median'] / llama_s:.2f} |")
    for key, title in (("profile_prefill", "prefill"), ("profile_decode", "16 decode steps")):
        lines += ["", f"## torch.profiler, longreach {title}: top ops by self time (share of the wall time)", "",
                  "| op | share | self s | calls |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {r['op']} | {r['share']:.1%} | {r['self_s']:.3f} | {r['calls']} |" for r in results[key]]
    if "compile_warmup_s" in results:
        warmup, eager, fast = results["compile_warmup_s"], results["decode"]["longreach"], results["decode"][COMPILED]
        gain = 1e3 / eager["median"] - 1e3 / fast["median"]  # ms a token saved by the compiled steps
        pays = f"after {warmup * 1e3 / gain:.0f} tokens" if gain > 0 else "never (its steps are not faster)"
        new = int(results["args"]["new_tokens"])
        repays = "does" if gain > 0 and warmup * 1e3 / gain <= new else "does not"
        lines += ["", "## torch.compile for decode", "",
                  f"The `{COMPILED}` row: its first step compiled for {warmup:.1f} s (excluded from its rate). Against "
                  f"longreach's eager steps it pays off {pays}; a {new}-token answer {repays} repay it. Its "
                  "StaticCache attends over every slot with a mask (other kernels than longreach's)."]  # fmt: skip
    prov = results["provenance"]
    lines += ["", "## Provenance", "",
              f"- wall time {results['wall_s']:.0f} s; args {results['args']}; load average (1, 5, 15 min) at the "
              f"start {results['load_average']['start']}, at the end {results['load_average']['end']}",
              f"- git {prov.get('git_sha')}, torch {prov['torch_version']}, transformers "
              f"{prov['transformers_version']}, tokenizers {prov['tokenizers']}, llama-cpp-python {prov['llama_cpp']}, "
              f"python {prov['python']}",
              f"- {prov['machine']}, CPU {prov['cpu_model']} ({', '.join(prov['cpu_simd_flags'])}); torch threads "
              f"{results['threads']}, OMP_NUM_THREADS={prov['omp_num_threads']}, llama.cpp n_threads "
              f"{results['threads']}",
              ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
