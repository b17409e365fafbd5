"""Benchmark ``longreach serve`` under concurrent clients, against llama.cpp's server on the same GGUF, and its
fault behaviour. Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/serve``).

Load: for each concurrency level C, C asyncio clients (httpx2, the HTTP client the ``openai`` package uses here)
each send one greedy completion of a distinct passkey prompt of ``--prompt-tokens`` tokens (SmolLM2's
tokenizer) with ``max_tokens``; per level: requests completed, errors, p50/p99 latency, output tokens/s (all
completion tokens over the level's wall time), decode tokens/s (longreach: generated tokens over the server's
decode seconds, from /metrics) and the server's peak RSS (sampled every 0.2 s).
Faults: ``longreach eval --backend openai`` while the server is killed with SIGKILL, then ``--resume`` against a
restarted server (every cell present once); a client that leaves mid-stream (KV bytes in use return to 0); the
bad-input bodies of tests/test_serve.py (no 5xx, the server still answers).

Run it under ``flock /tmp/longreach-bench.lock`` (the CPU is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx
import psutil
import torch

from longreach.models import load_tokenizer, resolve
from longreach.models.zoo import ZOO
from longreach.results.provenance import current
from longreach.tasks import parse_task

ROOT = Path(__file__).resolve().parents[1]
MODEL_NOTE = "SmolLM2-135M (Q4_1 GGUF dequantized to bf16)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess (longreach or llama.cpp) with its URL; ``kill`` sends SIGKILL."""

    def __init__(self, command: list[str], port: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.root}/v1/models", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError(f"{command[:4]} did not start")

    def rss_mb(self) -> float:
        try:
            process = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def longreach_server(model: str, stacks: list[str], port: int, *extra: str) -> Server:
    command = [sys.executable, "-m", "longreach.cli", "serve", "--model", model, "--port", str(port)]
    for stack in stacks:
        command += ["--method", stack]
    return Server([*command, *extra], port)


def llama_cpp_server(port: int, threads: int, parallel: int) -> Server:
    gguf = ZOO["smollm2-135m"].locate().path
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", str(4096 * parallel), "--n_threads", str(threads)]
    return Server(command, port)


def prompts(count: int, length: int) -> list[str]:
    """Distinct passkey prompts of exactly ``length`` SmolLM2 tokens (raw format)."""
    tokenizer = load_tokenizer(resolve("smollm2-135m"))
    task = parse_task("passkey").task
    return [task.generate(tokenizer, length, 0.5, seed=1000 + i, index=0).prompt for i in range(count)]


def metric(root: str, name: str) -> float:
    text = httpx.get(f"{root}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, int]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    start = time.perf_counter()
    answer = await client.post(url, json=body)
    answer.raise_for_status()
    return time.perf_counter() - start, int(answer.json()["usage"]["completion_tokens"])


async def level(server: Server, model: str, texts: list[str], max_tokens: int) -> dict:
    """``len(texts)`` clients at once; each sends one request."""
    peak = [server.rss_mb()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            peak.append(server.rss_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    longreach = "longreach" in " ".join(server.process.args)
    decode_before = (metric(server.root, "longreach_decode_seconds_total"), metric(
        server.root, "longreach_generation_tokens_total")) if longreach else (0.0, 0.0)  # fmt: skip
    limits = httpx.Limits(max_connections=len(texts) + 4)
    async with httpx.AsyncClient(timeout=1800, limits=limits) as client:
        start = time.perf_counter()
        url = f"{server.root}/v1/completions"
        results = await asyncio.gather(*(one(client, url, model, t, max_tokens) for t in texts), return_exceptions=True)
        wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    done = [r for r in results if not isinstance(r, BaseException)]
    latencies = sorted(seconds for seconds, _ in done)
    tokens = sum(count for _, count in done)
    row = {
        "clients": len(texts),
        "completed": len(done),
        "errors": len(results) - len(done),
        "error_examples": [repr(r)[:200] for r in results if isinstance(r, BaseException)][:2],
        "p50_s": statistics.median(latencies) if latencies else None,
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
        "wall_s": wall,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / wall,
        "peak_rss_mb": max(peak),
    }
    if longreach:
        seconds = metric(server.root, "longreach_decode_seconds_total") - decode_before[0]
        generated = metric(server.root, "longreach_generation_tokens_total") - decode_before[1]
        row["decode_tokens_per_s"] = generated / seconds if seconds else None
    return row


def load_suite(server: Server, model: str, clients: list[int], texts: list[str], max_tokens: int) -> list[dict]:
    asyncio.run(level(server, model, texts[:1], 4))  # warm up
    rows, offset = [], 1
    for count in clients:
        rows.append(asyncio.run(level(server, model, texts[offset : offset + count], max_tokens)))
        offset += count
        print(json.dumps({"model": model, **rows[-1]}), flush=True)
    return rows


def kill_and_resume(model: str, workdir: Path) -> dict:
    """``longreach eval`` over the openai backend; the server is killed (SIGKILL) once 3 cells are stored,
    restarted, and the eval finished with --resume."""
    port = free_port()
    out = workdir / "eval"
    command = [sys.executable, "-m", "longreach.cli", "eval", "--model", model, "--task", "passkey",
               "--lengths", "1k", "--depths", "0,0.25,0.5,0.75,1", "--samples", "2", "--prompt", "raw", "--quiet",
               "--backend", f"openai:base_url=http://127.0.0.1:{port}/v1:retries=1:timeout=60:concurrency=1",
               "--out", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = longreach_server(model, ["none"], port)
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    store = out / "results.sqlite"
    while first.poll() is None:
        time.sleep(0.2)
        if store.exists() and _cells(store)[0] >= 3:
            server.kill()
            break
    first_status, first_error = first.wait(), first.stderr.read().strip().splitlines()[-1:]
    stored_after_kill = _cells(store)
    server = longreach_server(model, ["none"], port)
    second = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
    server.stop()
    total, distinct, ok = _cells(store)
    return {
        "planned_cells": 10,
        "first_eval_exit": first_status,
        "first_eval_error": first_error,
        "cells_stored_when_killed": stored_after_kill[0],
        "resume_exit": second.returncode,
        "cells": total,
        "distinct_cells": distinct,
        "ok_cells": ok,
        "every_cell_once": total == distinct == 10,
    }


def _cells(store: Path) -> tuple[int, int, int]:
    db = sqlite3.connect(store)
    try:
        columns = [row[1] for row in db.execute("PRAGMA table_info(cells)")]
        key = ", ".join(c for c in ("task", "method", "context_length", "depth", "sample", "idx") if c in columns)
        total, ok = db.execute("SELECT COUNT(*), SUM(status = 'ok') FROM cells").fetchone()
        distinct = db.execute(f"SELECT COUNT(*) FROM (SELECT DISTINCT {key} FROM cells)").fetchone()[0]
        return total, distinct, ok or 0
    except sqlite3.OperationalError:
        return 0, 0, 0
    finally:
        db.close()


def disconnect(server: Server, model: str, prompt: str) -> dict:
    """A client reads a few streamed chunks and leaves: the server's KV bytes in use fall back to 0."""
    body = {"model": model, "prompt": prompt, "max_tokens": 400, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server.root}/v1/completions", json=body, timeout=300) as answer:
        for count, _ in enumerate(answer.iter_lines()):
            if count == 6:
                during = metric(server.root, "longreach_kv_bytes_in_use")
                break
    deadline = time.monotonic() + 30
    while metric(server.root, "longreach_running_requests") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = metric(server.root, "longreach_kv_bytes_in_use")
    return {"kv_bytes_in_use_while_streaming": during, "kv_bytes_in_use_after_leaving": after, "freed": after == 0}


def bad_inputs(server: Server) -> dict:
    """The bad-input bodies of tests/test_serve.py against this server: status codes, 5xx count, still alive."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_serve import BAD  # the one list of bad bodies

    codes = []
    for body, _, _ in BAD:
        body = body if isinstance(body, bytes) else json.dumps(body).replace("tiny-llama", "smollm2-135m").encode()
        answer = httpx.post(f"{server.root}/v1/completions", content=body, timeout=60,
                            headers={"Content-Type": "application/json"})  # fmt: skip
        codes.append(answer.status_code)
    alive = httpx.get(f"{server.root}/health").status_code == 200
    return {"cases": len(codes), "codes": sorted(set(codes)), "5xx": sum(c >= 500 for c in codes), "alive": alive}


def provenance() -> dict:
    info = current()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    import fastapi
    import llama_cpp
    import uvicorn

    versions = {"fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__, "llama_cpp": llama_cpp.__version__}
    return {**info, "cpu_model": cpu, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "serve_versions": versions}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,2,4,8,16,32")
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cache-stack", default="knorm:compression_ratio=0.5")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve")
    args = parser.parse_args()
    started = time.perf_counter()
    clients = [int(c) for c in args.clients.split(",")]
    texts = prompts(1 + sum(clients), args.prompt_tokens)
    results: dict = {"model": MODEL_NOTE, "args": {k: str(v) for k, v in vars(args).items()}, "load": {}}
    port = free_port()
    server = longreach_server("smollm2-135m", ["none", args.cache_stack], port, "--max-concurrency", "32",
                              "--max-queue", "64", "--kv-budget-mb", "4096")  # fmt: skip
    try:
        for stack in ("none", args.cache_stack):
            name = "smollm2-135m" if stack == "none" else f"smollm2-135m+{stack}"
            results["load"][f"longreach {stack}"] = load_suite(server, name, clients, texts, args.max_tokens)
        results["faults"] = {
            "disconnect": disconnect(server, "smollm2-135m", texts[0]),
            "bad_input": bad_inputs(server),
        }
    finally:
        server.stop()
    llama = llama_cpp_server(free_port(), torch.get_num_threads(), 1)
    try:
        results["load"]["llama.cpp server"] = load_suite(llama, "smollm2-135m", clients, texts, args.max_tokens)
    finally:
        llama.stop()
    with tempfile.TemporaryDirectory() as workdir:
        results["faults"]["kill_and_resume"] = kill_and_resume("smollm2-135m", Path(workdir))
    results["wall_s"] = time.perf_counter() - started
    results["provenance"] = provenance()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(results))
    print(render(results))


def render(results: dict) -> str:
    lines = [f"# longreach serve under load: {results['model']}", ""]
    head = (
        "| server / stack | clients | completed | errors | p50 s | p99 s | output tok/s | decode tok/s | peak RSS MiB |"
    )
    lines += [head, "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results["load"].items():
        for row in rows:
            decode = row.get("decode_tokens_per_s")
            cells = [name, row["clients"], row["completed"], row["errors"], f"{row['p50_s']:.2f}",
                     f"{row['p99_s']:.2f}", f"{row['output_tokens_per_s']:.2f}",
                     "-" if decode is None else f"{decode:.1f}", f"{row['peak_rss_mb']:.0f}"]  # fmt: skip
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Faults", "", "```json", json.dumps(results["faults"], indent=2), "```", ""]
    prov = results["provenance"]
    lines += [
        "## Provenance",
        "",
        f"- wall time: {results['wall_s']:.0f} s; args: {results['args']}",
        f"- git {prov.get('git_sha')}, longreach {prov.get('longreach_version')}, CPU {prov['cpu_model']}, "
        f"torch threads {prov['torch_threads']}",
        "- environment: "
        + json.dumps(
            {
                k: prov.get(k)
                for k in ("machine", "cpu_flags", "torch_version", "transformers_version", "serve_versions")
            }
        ),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
